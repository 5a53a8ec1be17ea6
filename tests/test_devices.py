"""Device profiles (devices/*.toml), this host's detection, `--device` parsing and `edgekit devices`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgekit.errors import ConfigError, UsageError
from edgekit.profile.devices import get_profile, list_profiles, parse_ssh, resolve_device

SHIPPED = {"local", "raspberry-pi-4", "raspberry-pi-5", "pixel-8", "jetson-orin-nano", "intel-core-ultra-npu"}


def test_shipped_profiles_have_rates_bandwidth_and_access():
    profiles = {p.name: p for p in list_profiles()}
    assert SHIPPED <= set(profiles)
    for name in SHIPPED - {"local"}:
        p = profiles[name]
        assert p.cores and p.clock_ghz and p.memory_bandwidth_gbs and p.runtimes and p.sources
        assert p.peak_gops("CPU", "fp32") and p.peak_gops("CPU", "int8") >= p.peak_gops("CPU", "fp32")
        assert p.access["kind"] in ("ssh", "adb")
    assert profiles["intel-core-ultra-npu"].peak_gops("NPU", "int8") == 11000
    assert profiles["pixel-8"].access["kind"] == "adb"


def test_local_is_detected():
    p = get_profile("local")
    with open("/proc/cpuinfo") as f:
        flags = next(ln for ln in f if ln.startswith("flags")).split(":")[1].split()
    assert p.cores >= 1 and p.memory_gb > 0 and p.memory_bandwidth_gbs > 0
    assert ("avx512_vnni" in p.isa) == ("avx512_vnni" in flags)
    assert ("avx2" in p.isa) == ("avx2" in flags)
    assert p.peak_gops("CPU", "fp32") > 0


def test_device_specs():
    assert resolve_device("local").kind == "local"
    t = resolve_device("ssh://pi@raspberrypi.local:2222", remote_python="/opt/venv/bin/python")
    assert (t.kind, t.user, t.host, t.port, t.python) == ("ssh", "pi", "raspberrypi.local", 2222, "/opt/venv/bin/python")
    assert parse_ssh("ssh://[::1]:22") == (None, "::1", 22)
    a = resolve_device("adb:R58M12345")
    assert (a.kind, a.serial) == ("adb", "R58M12345")
    assert resolve_device("raspberry-pi-5").kind == "estimate"  # shipped profile: no host configured
    for bad in ("adb:", "adb:-s x", "ssh://a b@host", "no-such-device"):
        with pytest.raises(UsageError):
            resolve_device(bad)


def test_user_profile_with_access_is_reached(tmp_path, monkeypatch):
    (tmp_path / "my-pi.toml").write_text(
        'name = "my-pi"\ndescription = "my board"\ncores = 4\nmemory_bandwidth_gbs = 10\n'
        '[units.CPU]\npeak_fp32_gops = 50\n[access]\nkind = "ssh"\nhost = "me@10.0.0.7:2200"\npython = "/usr/bin/python3.11"\n')
    (tmp_path / "broken.toml").write_text('name = "broken"\n')
    monkeypatch.setenv("EDGEKIT_DEVICE_PATH", str(tmp_path))
    t = resolve_device("my-pi")
    assert (t.kind, t.user, t.host, t.port, t.python) == ("ssh", "me", "10.0.0.7", 2200, "/usr/bin/python3.11")
    with pytest.raises(ConfigError, match="description"):
        get_profile("broken")


def test_cli_devices():
    from edgekit.cli import cli

    out = CliRunner().invoke(cli, ["devices", "--json"])
    assert out.exit_code == 0, out.output
    names = {d["name"] for d in json.loads(out.stdout)["devices"]}
    assert SHIPPED <= names
    text = CliRunner().invoke(cli, ["devices"])
    assert text.exit_code == 0 and "raspberry-pi-5" in text.output and "intel-core-ultra-npu" in text.output
