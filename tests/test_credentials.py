"""${VAR} from systemd credentials ($CREDENTIALS_DIRECTORY) when the environment lacks VAR."""
from __future__ import annotations

import pytest

from dbackd.config import ConfigError, load_text
from dbackd.config.environment import Environment

from .conftest import ROOT

TEXT = """
servers:
  - snowflake: "1"
    id: legacy
    name: Legacy
    passworded: true
    password: ${LEGACY_PASSWORD}
"""


def test_credential_file_fills_a_variable(tmp_path, monkeypatch):
    (tmp_path / "LEGACY_PASSWORD").write_text("hunter2\n")  # as `echo hunter2 > file` writes it
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.delenv("LEGACY_PASSWORD", raising=False)
    assert load_text(TEXT, "t.yaml", ROOT).servers[0].password == "hunter2"


def test_environment_wins_over_a_credential(tmp_path, monkeypatch):
    (tmp_path / "LEGACY_PASSWORD").write_text("from-file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("LEGACY_PASSWORD", "from-env")
    assert load_text(TEXT, "t.yaml", ROOT).servers[0].password == "from-env"


def test_missing_credential_is_the_usual_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.delenv("LEGACY_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="environment variable LEGACY_PASSWORD is not set"):
        load_text(TEXT, "t.yaml", ROOT)


def test_lookup_rules(tmp_path):
    (tmp_path / "ONLY_ONE_NEWLINE").write_bytes(b"a\n\n")
    (tmp_path / "BINARY").write_bytes(b"\xff\xfe")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "X").write_text("nested")
    env = Environment({"HOME": "/root"}, credentials=str(tmp_path))
    assert env["ONLY_ONE_NEWLINE"] == "a\n"
    assert "BINARY" not in env and "HOME" in env and env["HOME"] == "/root"
    assert "sub/X" not in env and "../etc" not in env  # names cannot walk out of the directory
    assert list(env) == ["HOME"] and len(env) == 1  # credentials are not listed, only looked up
    assert "ANY" not in Environment({})  # no CREDENTIALS_DIRECTORY: environment only
