"""A real OpenSSH server on loopback for the SSH tests: throwaway host and user keys made with ssh-keygen
in a temp folder, `sshd -D -f CONFIG` on a free port, and an ssh client config (-F, via
$EDGEKIT_SSH_CONFIG) with its own known_hosts, so the machine's ~/.ssh is never read or written."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/usr/bin/sshd")


def find_sshd() -> str | None:
    for c in SSHD_CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)],
                   check=True, capture_output=True)
    return (path.with_suffix(".pub")).read_text().strip()


@dataclass
class Sshd:
    port: int
    user: str
    proc: subprocess.Popen
    client_config: Path
    known_hosts: Path
    dir: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def host_key_line(self, pub: str) -> str:
        return f"[127.0.0.1]:{self.port} {' '.join(pub.split()[:2])}\n"

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes (children of the listener we started)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid:
                pids.append(int(entry))
        return pids

    def kill_sessions(self) -> int:
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)


def start_sshd(tmp: Path, extra: tuple[str, ...] = ()) -> Sshd:
    """`extra`: more sshd_config lines (e.g. "SetEnv TMPDIR=/x" for a device whose sessions have a $TMPDIR)."""
    sshd = find_sshd()
    if sshd is None:
        pytest.skip("sshd is not installed (run .ci/services.sh, i.e. apt-get install -y openssh-server)")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir sshd requires as root
    host_pub = keygen(tmp / "host_key")
    user_pub = keygen(tmp / "user_key")
    (tmp / "authorized_keys").write_text(user_pub + "\n")
    port = free_port()
    user = getpass.getuser()
    cfg = tmp / "sshd_config"
    cfg.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {tmp / 'host_key'}", f"PidFile {tmp / 'sshd.pid'}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxStartups 50", *extra, ""]))
    known = tmp / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}\n")
    client = tmp / "ssh_config"
    client.write_text("\n".join([
        "Host 127.0.0.1", f"  IdentityFile {tmp / 'user_key'}", "  IdentitiesOnly yes", "  IdentityAgent none",
        f"  UserKnownHostsFile {known}", "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes",
        "  LogLevel ERROR", ""]))
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "sshd.log", "w"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start: {(tmp / 'sshd.log').read_text()[-300:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    return Sshd(port, user, proc, client, known, tmp)


def stop_sshd(s: Sshd) -> None:
    s.proc.terminate()
    try:
        s.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        s.proc.kill()


@contextmanager
def serving(server: Sshd) -> Iterator[Sshd]:
    """edgekit's ssh uses `server`'s client config (EDGEKIT_SSH_CONFIG) inside the block; the server stops after."""
    old = os.environ.get("EDGEKIT_SSH_CONFIG")
    os.environ["EDGEKIT_SSH_CONFIG"] = str(server.client_config)
    try:
        yield server
    finally:
        if old is None:
            os.environ.pop("EDGEKIT_SSH_CONFIG", None)
        else:
            os.environ["EDGEKIT_SSH_CONFIG"] = old
        stop_sshd(server)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    with serving(start_sshd(tmp_path_factory.mktemp("sshd"))) as server:
        yield server
