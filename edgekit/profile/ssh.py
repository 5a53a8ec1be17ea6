"""Profile on a remote device over SSH, with the user's own OpenSSH client and setup.

The system `ssh`/`scp` binaries read ~/.ssh/config, keys, the agent and known_hosts exactly as they do
for the user; $EDGEKIT_SSH_CONFIG names another client config (passed as -F). Host keys are always
verified (StrictHostKeyChecking is never turned off; BatchMode=yes makes an unknown or changed key an
error instead of a prompt). Every command is an argv list; the one command string ssh sends to the
remote shell is built from shlex.quote'd words, and uploaded files get fixed names (model.onnx ...),
so no file or model name reaches a shell.

Flow: mktemp -d on the device -> scp runner.py + feeds.npz + the artifact -> run the runner with the
device's Python (it streams one JSON line per timed run) under a trap that removes the folder ->
remove the folder again from here (best effort) when the connection died.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceError, MissingDependencyError, UsageError
from edgekit.profile.devices import DeviceTarget
from edgekit.profile.local import RUNNER
from edgekit.profile.stream import Collected, exit_reason, run_streaming


class SshStepError(DeviceError):
    """A failed ssh/scp step; `reason`: connect | auth | host_key | timeout | failed (the command itself)."""

    def __init__(self, message: str, *, hint: str | None = None, reason: str = "failed") -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


TMP_HINT = ("give --remote-tmp DIR (a writable folder with room on the device), or tmpdir in the [access] table "
            "of its device profile")


def sendable(name: str) -> bool:
    """A file name scp can give the device: one path component, no control characters (the scp protocol
    carries it line by line), no leading '-'. It never reaches a shell: the runner gets fixed names (model.onnx)
    and only the model itself reads its external data files, by the names it records (spaces and all)."""
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and not name.startswith("-") and not any(ord(c) < 32 or ord(c) == 127 for c in name))


def q(word: str) -> str:
    """Quote one word for the remote POSIX shell; a leading ~/ stays expandable."""
    if word.startswith("~/"):
        return '"$HOME"/' + shlex.quote(word[2:])
    return shlex.quote(word)


@dataclass
class SshDevice:
    host: str
    user: str | None = None
    port: int | None = None
    python: str = "python3"
    timeout: float = 600.0
    connect_timeout: int = 10
    config: str | None = None
    tmpdir: str | None = None  # where the run's folder is made on the device: None = its $TMPDIR, else /tmp

    @classmethod
    def from_target(cls, target: DeviceTarget, *, timeout: float = 600.0, tmpdir: str | None = None) -> SshDevice:
        assert target.host
        access = target.profile.access if target.profile else {}
        # a device that does not answer is given up on within --timeout too (ssh waited its own 10 s)
        return cls(host=target.host, user=target.user, port=target.port, python=target.python, timeout=timeout,
                   connect_timeout=max(1, min(10, math.ceil(timeout))),
                   config=os.environ.get("EDGEKIT_SSH_CONFIG") or None, tmpdir=tmpdir or access.get("tmpdir"))

    @property
    def label(self) -> str:
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"

    # ------------------------------------------------------------ argv builders
    def _common(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.config:
            opts = ["-F", self.config, *opts]
        return opts

    def _dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_argv(self, remote_words: list[str] | str) -> list[str]:
        """ssh argv running `remote_words` (quoted word by word) or an already-quoted command string."""
        cmd = remote_words if isinstance(remote_words, str) else " ".join(q(w) for w in remote_words)
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *self._common(), *port, "-T", "--", self._dest(), cmd]

    def scp_argv(self, files: list[Path], remote_dir: str, legacy: bool = False) -> list[str]:
        port = ["-P", str(self.port)] if self.port else []
        port += ["-O"] if legacy else []
        host = f"[{self.host}]" if ":" in self.host else self.host
        dest = f"{self.user}@{host}" if self.user else host
        return ["scp", "-q", *self._common(), *port, "--", *map(str, files), f"{dest}:{remote_dir}/"]

    # ------------------------------------------------------------ steps
    def _check(self, argv: list[str], what: str, timeout: float | None = None,
               timeout_hint: str = "is the device up and reachable?") -> str:
        if shutil.which(argv[0]) is None:
            raise MissingDependencyError(f"'{argv[0]}' (OpenSSH client) is not installed",
                                         hint="install openssh-client")
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout or self.timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise SshStepError(f"{self.label}: {what} timed out after {exc.timeout:g} s", hint=timeout_hint,
                               reason="timeout") from exc
        if proc.returncode != 0:
            raise self.error(proc.returncode, proc.stderr, what)
        return proc.stdout

    def error(self, rc: int | None, stderr: str, what: str) -> SshStepError:
        err = stderr.strip()
        last = err.splitlines()[-1] if err else f"exit {rc}"
        if re.search(r"No \S+ host key is known for", err) and "HAS CHANGED" not in err:
            # a device never connected to: the first run of every user; nothing was re-installed
            port = f"-p {self.port} " if self.port else ""
            return SshStepError(f"{self.label}: host key verification failed (the device's host key is not in "
                                "known_hosts yet); edgekit never accepts host keys itself",
                                hint=f"connect once with `ssh {port}{self._dest()}` and accept its key after "
                                     "checking the fingerprint", reason="host_key")
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err or "Host key verification failed" in err:
            kind = "changed" if "HAS CHANGED" in err else "unknown or does not match known_hosts"
            return SshStepError(f"{self.label}: host key verification failed (the host key is {kind}); "
                                "edgekit never skips host key checks",
                                hint=f"if the device was really re-installed, check its key and run "
                                     f"`ssh-keygen -R {self.host}` then `ssh {self._dest()}` once to accept the new "
                                     "key", reason="host_key")
        if rc == 255 and "Permission denied (" in err:  # ssh's own "Permission denied (publickey)", not a remote file's
            return SshStepError(f"{self.label}: authentication failed ({last})",
                                hint="set up key login (ssh-copy-id) or an agent; edgekit runs ssh with BatchMode=yes",
                                reason="auth")
        if rc == 255 and any(s in err for s in ("Connection refused", "timed out", "Could not resolve",
                                                "No route to host", "Network is unreachable")):
            return SshStepError(f"{self.label}: cannot connect ({last})", hint="is the device on and reachable?",
                                reason="connect")
        return SshStepError(f"{self.label}: {what} failed ({last})")

    def _base(self) -> str:
        """The device folder runs are made in, as a word of the remote sh: --remote-tmp / [access] tmpdir, else the
        device's own $TMPDIR (Termux, Android, images whose /tmp is read-only or a small tmpfs), else /tmp."""
        return q(self.tmpdir) if self.tmpdir else '"${TMPDIR:-/tmp}"'

    def mkdtemp(self) -> str:
        """A new private folder on the device; returns its absolute path. The name is drawn here (unguessable;
        `mkdir` refuses one that exists, as mktemp does), so a run interrupted while the device makes it still
        knows what to remove: with `mktemp -d` a Ctrl-C/SIGTERM between the remote mkdir and its answer left the
        folder behind."""
        where = f"{self._base()}/edgekit.{secrets.token_hex(8)}"
        script = f'd={where} && mkdir -m 700 "$d" && cd "$d" && pwd'
        try:
            out = self._check(self.ssh_argv(["sh", "-c", script]), "making a temporary folder", timeout=60)
        except SshStepError as exc:
            if exc.reason != "failed":
                raise
            raise SshStepError(f"{exc.message}: the device cannot write in {self.tmpdir or '$TMPDIR or /tmp'}",
                               hint=TMP_HINT) from exc
        except BaseException:
            self.cleanup(where, expression=True)
            raise
        path = (out.strip().splitlines() or [""])[-1]
        if not path.startswith("/"):
            self.cleanup(where, expression=True)
            raise DeviceError(f"{self.label}: making a temporary folder gave no path (it printed {out.strip()!r})")
        return path

    def cleanup(self, remote_dir: str, expression: bool = False) -> None:
        """Remove the run's folder (best effort). expression: `remote_dir` is a word of the remote sh already."""
        where = remote_dir if expression else shlex.quote(remote_dir)
        try:
            subprocess.run(self.ssh_argv(["sh", "-c", f"rm -rf {where}"]), capture_output=True, timeout=20,
                           stdin=subprocess.DEVNULL)
        except (subprocess.TimeoutExpired, OSError):
            pass

    def upload(self, files: dict[str, Path], remote_dir: str) -> None:
        """Copy files under the given remote names (staged as symlinks so no local name travels)."""
        for name in files:
            if not sendable(name):
                raise UsageError(f"cannot send a file named {name!r} to the device",
                                 hint="one file name without control characters or a leading '-'")
        slow = "the copy of the artifact took longer than --timeout: a slow link or a large artifact; raise --timeout"
        with tempfile.TemporaryDirectory(prefix="edgekit-ssh-") as stage:
            staged = []
            for name, src in files.items():
                dst = Path(stage) / name
                os.symlink(Path(src).resolve(), dst)
                staged.append(dst)
            try:
                self._check(self.scp_argv(staged, remote_dir), "copying the artifact (scp)", timeout_hint=slow)
            except SshStepError as exc:
                if exc.reason != "failed":  # a timeout, the key, the connection: the legacy protocol fares no better
                    raise
                self._check_room(files, remote_dir)
                # servers without an SFTP subsystem (dropbear, minimal images): the legacy scp protocol
                self._check(self.scp_argv(staged, remote_dir, legacy=True), "copying the artifact (scp -O)",
                            timeout_hint=slow)

    def _check_room(self, files: dict[str, Path], remote_dir: str) -> None:
        """After a failed copy: a device without the room for the files is named as such (SFTP says only
        'write remote ...: Failure')."""
        need = sum(Path(p).stat().st_size for p in files.values())
        # the part copied before the failure is removed first: it holds the room the whole copy needs
        script = f"cd {shlex.quote(remote_dir)} && rm -f -- {' '.join(shlex.quote(n) for n in files)}; df -Pk ."
        try:
            proc = subprocess.run(self.ssh_argv(["sh", "-c", script]), capture_output=True, text=True,
                                  timeout=30, stdin=subprocess.DEVNULL)
            free = int(proc.stdout.strip().splitlines()[-1].split()[3]) * 1024
        except (subprocess.TimeoutExpired, OSError, IndexError, ValueError):
            return
        if free < need:
            raise DeviceError(f"{self.label}: no room on the device for the artifact: {remote_dir.rsplit('/', 1)[0]} "
                              f"has {free / 2**20:.1f} MB free, the files need {need / 2**20:.1f} MB",
                              hint=f"free space there, or {TMP_HINT}")

    def run_command(self, remote_dir: str, words: list[str], *,
                    on_record: Callable[[dict[str, Any]], None] | None = None) -> tuple[Collected, int | None, str]:
        inner = " ".join(q(w) for w in words)
        # TMPDIR: what the runner or its runtime writes (ORT's profile, caches) is in the folder the trap removes
        script = f"trap {shlex.quote('rm -rf ' + shlex.quote(remote_dir))} EXIT HUP INT TERM; " \
                 f"cd {shlex.quote(remote_dir)} && TMPDIR={shlex.quote(remote_dir)} && export TMPDIR && {inner}"
        # stdin: a pipe we never write to. When this process or the connection dies, the remote command reads
        # end of file and the runner (--exit-on-stdin-eof) exits: no run left burning the device's cores
        return run_streaming(self.ssh_argv(["sh", "-c", script]), timeout=self.timeout, on_record=on_record,
                             stdin=subprocess.PIPE)

    def run_text(self, words: list[str], remote_dir: str | None = None) -> tuple[int | None, str, str]:
        """Run one remote command (quoted word by word) and return (rc, stdout, stderr); rc None on timeout.

        The command (benchmark_model) stops when this process or the connection is gone, as the runner does: a
        reader on a stdin pipe we never write to signals the session's process group (sshd makes one per session:
        the command, any children of a wrapper script, and the shell) at end of file. It went on burning the
        board's cores after a timeout or Ctrl-C, skewing the next measurement. `remote_dir` is removed on the
        device however the command ends (edgekit killed outright cannot remove it from here)."""
        inner = " ".join(q(w) for w in words)
        trap = f"trap {shlex.quote('rm -rf ' + shlex.quote(remote_dir))} EXIT HUP INT TERM; " if remote_dir else ""
        script = (f"{trap}exec 3<&0 </dev/null; {inner} & p=$!; "
                  "( while read -r _ <&3; do :; done; kill -TERM 0 ) >/dev/null 2>&1 & w=$!; "
                  "exec 3<&-; wait $p; rc=$?; kill $w 2>/dev/null; exit $rc")
        lines: list[str] = []
        _, rc, err = run_streaming(self.ssh_argv(["sh", "-c", script]), timeout=self.timeout, stdin=subprocess.PIPE,
                                   lines=lines)
        if rc is None:
            return None, "", ""
        if rc == 255:
            raise self.error(255, err, "run")
        return rc, "".join(lines), err

    # ------------------------------------------------------------ the runner
    def run_runner(self, model: Path, feeds: Path, runner_args: list[str], *,
                   on_record: Callable[[dict[str, Any]], None] | None = None,
                   extra: dict[str, Path] | None = None) -> tuple[Collected, str | None]:
        """`extra`: more files for the runner, under fixed names its arguments refer to (ops.npz)."""
        files = {"runner.py": RUNNER, "feeds.npz": feeds, **artifact_files(model), **(extra or {})}
        remote_model = next(n for n in files if n.startswith("model."))
        remote_dir = self.mkdtemp()
        try:
            self.upload(files, remote_dir)
            words = [self.python, "runner.py", "--model", remote_model, "--feeds", "feeds.npz", *runner_args,
                     "--exit-on-stdin-eof"]
            col, rc, err = self.run_command(remote_dir, words, on_record=on_record)
        finally:
            self.cleanup(remote_dir)
        if rc is None:
            return col, f"timed out after {self.timeout:g} s"
        if col.error is not None or (rc == 0 and col.done is not None):
            return col, None
        if rc == 255:
            e = self.error(rc, err, "run")
            if col.meta is not None:
                return col, f"connection lost during the run ({e.message})"
            raise e
        if rc == 127 or "not found" in err and col.meta is None:
            raise DeviceError(f"{self.label}: no Python at '{self.python}' on the device",
                              hint="give --remote-python PATH (or python in the device profile), or use "
                                   "--benchmark-model for .tflite artifacts on devices without Python")
        if "No module named" in err and col.meta is None:
            mod = re.findall(r"No module named '([^']+)'", err)
            raise DeviceError(f"{self.label}: {self.python} lacks the module '{mod[-1] if mod else '?'}'",
                              hint="install numpy and the runtime there, or pick another --remote-python")
        said = err.strip().splitlines() or col.junk
        if col.meta is None:  # it never started the runner: not a Python (3 with the json module) at all
            shown = f"; it printed: {said[-1][:200]}" if said else ", printing nothing"
            raise DeviceError(f"{self.label}: '{self.python}' did not run edgekit's runner (exit {rc}{shown})",
                              hint="give --remote-python the path of a Python 3.7 or newer on the device (with "
                                   "numpy and the runtime)")
        tail = said[-1] if said else "no message"
        return col, f"the runner stopped ({exit_reason(rc)}): {tail}"


def artifact_files(model: Path) -> dict[str, Path]:
    """The artifact under its remote name plus the files it needs (OpenVINO .bin, ONNX external data)."""
    suffix = model.suffix.lower()
    files = {f"model{suffix}": model}
    if suffix == ".xml":
        weights = model.with_suffix(".bin")
        if not weights.is_file():
            raise UsageError(f"{model}: its weights file {weights.name} is missing")
        files["model.bin"] = weights
    elif suffix == ".onnx":
        for loc in onnx_external_files(model):
            files[loc] = model.parent / loc
    return files


def onnx_external_files(model: Path) -> list[str]:
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    locs = set()
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location":
                    locs.add(kv.value)
    for loc in sorted(locs):
        if "/" in loc or "\\" in loc or loc in (".", ".."):
            raise UsageError(f"{model}: its external data file '{loc}' is in another folder; a remote profile sends "
                             "the files next to the model", hint="save the model with its data next to it "
                             "(onnx.save(..., save_as_external_data=True, location='NAME.data'))")
        if not (model.parent / loc).is_file():
            raise UsageError(f"{model}: its external data file '{loc}' is missing (looked next to the model)")
        if not sendable(loc):
            raise UsageError(f"{model}: cannot send its external data file {loc!r} to the device",
                             hint="rename it (and the location recorded in the model) without control characters "
                                  "or a leading '-'")
    return sorted(locs)
