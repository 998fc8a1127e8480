"""systemd/dbackd.service: the directives the deployment relies on, and `systemd-analyze verify`."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLE, ROOT

UNIT = ROOT / "systemd" / "dbackd.service"
INSTALLED = "/opt/dbackd/bin/dbackd"
CONFIG = "/etc/dbackd/dback.yaml"


def directives(text: str) -> dict[str, list[str]]:
    """section.Key -> every value given (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


D = directives(UNIT.read_text())


def one(key: str) -> str:
    values = D.get(key)
    assert values and len(values) == 1, f"{key}: {values}"
    return values[0]


def test_notify_reload_restart():
    assert one("Service.Type") == "notify"
    assert one("Service.NotifyAccess") == "main"
    assert one("Service.ExecStartPre") == f"{INSTALLED} check -c {CONFIG}"
    assert one("Service.ExecStart") == f"{INSTALLED} run -c {CONFIG}"
    assert one("Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Service.Restart") == "on-failure"
    assert re.fullmatch(r"\d+s?", one("Service.WatchdogSec"))
    assert one("Install.WantedBy") == "multi-user.target"


def test_file_limit_fits_the_default_connection_cap():
    from dbackd.ops import fdlimit
    from dbackd.config import Limits

    assert int(one("Service.LimitNOFILE")) >= Limits().max_connections + fdlimit.RESERVE


def test_hardening():
    assert one("Service.DynamicUser") == "yes"
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "PrivateDevices", "RestrictSUIDSGID"):
        assert one(f"Service.{key}") == "yes", key
    assert one("Service.ProtectSystem") == "strict"
    assert one("Service.CapabilityBoundingSet") == ""
    assert set(one("Service.RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert D["Service.SystemCallFilter"][0] == "@system-service"


def test_secrets_come_from_root_only_files():
    assert one("Service.EnvironmentFile") == "-/etc/dbackd/env"
    assert "LoadCredential=" in UNIT.read_text()


def installed_copy(tmp_path: Path) -> Path:
    """The unit with its program path pointing at this environment's dbackd (verify checks it exists)."""
    program = Path(sys.executable).with_name("dbackd")
    assert program.exists(), program
    unit = tmp_path / "dbackd.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(program)).replace(CONFIG, str(EXAMPLE)))
    return unit


def test_exec_start_pre_passes_on_the_example(tmp_path):
    command = directives(installed_copy(tmp_path).read_text())["Service.ExecStartPre"][0].split()
    assert subprocess.run(command, capture_output=True, timeout=60).returncode == 0


ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@needs_analyze
def test_systemd_analyze_verify(tmp_path):
    unit = installed_copy(tmp_path)
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dbackd.service" not in done.stderr, done.stderr  # any complaint names the unit


@needs_analyze
def test_systemd_analyze_security_rates_it_ok(tmp_path):
    unit = installed_copy(tmp_path)
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for dbackd\.service: ([0-9.]+)", done.stdout)
    if found is None:
        pytest.skip(f"this systemd-analyze cannot rate a unit offline: {done.stderr.strip()[:200]}")
    assert float(found.group(1)) <= 2.0, done.stdout
