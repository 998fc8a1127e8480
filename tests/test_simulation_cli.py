"""`dbackd simulate`: the event stream as JSON lines, fast-forwarded, and a summary."""
from __future__ import annotations

import json

import pytest

from dbackd.cli import main
from dbackd.config import load_file

from .conftest import ROOT
from .test_config import EXAMPLE_ENV

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture(autouse=True)
def restore_logging():
    """`simulate` points the logs at the (captured, later closed) stderr: put them back after."""
    import logging

    import structlog

    saved, handlers = structlog.get_config(), logging.root.handlers[:]
    yield
    structlog.configure(**saved)
    logging.root.handlers[:] = handlers


def run(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = main(["simulate", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_simulate_every_example(capsys, monkeypatch, path):
    for name, value in EXAMPLE_ENV.items():  # the secrets examples/oauth.yaml takes from the environment
        monkeypatch.setenv(name, value)
    code, events, err = run(capsys, "-c", str(path), "--seconds", "120", "--seed", "1")
    assert code == 0
    config = load_file(path, env=EXAMPLE_ENV)
    simulated = {s.snowflake for s in config.servers if s.simulation is not None}
    assert {e["server"] for e in events} <= simulated
    assert all(e["type"] in ("presence", "message") and 0 < e["t"] <= 120 for e in events)
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    assert "-- summary: 120 s simulated" in err
    for server in config.servers:
        assert server.id in err
    if simulated:
        assert events
        assert "share of time" in err


def test_simulate_the_embedded_default_keeps_the_classic_rhythm(capsys):
    code, events, err = run(capsys, "--seconds", "20", "--server", "dworld")
    assert code == 0
    assert [(e["t"], e["type"]) for e in events] == [
        (4.0, "presence"), (5.0, "message"), (8.0, "presence"), (10.0, "message"), (12.0, "presence"),
        (15.0, "message"), (16.0, "presence"), (20.0, "message"), (20.0, "presence")]
    assert {e["server"] for e in events} == {"232769614004748288"}
    assert all(e["data"]["channel"] == "527964146659229701" for e in events if e["type"] == "message")
    assert "dworld (D-World, 232769614004748288), seed " in err
    assert "5 status changes, 4 messages" in err
    assert "docs" not in err  # only the server asked for
    assert "--seed" in err  # the embedded default names no seed: the summary says how to repeat the run


def test_simulate_is_repeatable_with_a_seed_and_one_server_is_a_slice_of_all(capsys):
    lively = str(ROOT / "examples" / "lively.yaml")
    args = ("-c", lively, "--seconds", "300", "--start", "2026-01-01T20:00+01:00")
    _, first, _ = run(capsys, *args)
    _, again, _ = run(capsys, *args)
    assert first == again and len(first) > 100
    _, plaza, _ = run(capsys, *args, "--server", "plaza")
    assert plaza == [e for e in first if e["server"] == "300000000000000001"]
    _, other, _ = run(capsys, *args, "--seed", "7")
    assert other != first
    _, night, _ = run(capsys, "-c", lively, "--seconds", "300", "--start", "2026-01-01T04:00+01:00", "--server", "plaza")
    assert len(night) < len(plaza) / 5  # the activity curve: 0.1 at 4:00, 2.5 at 20:00


def test_summary_only(capsys):
    code, events, err = run(capsys, "--seconds", "40", "--summary-only")
    assert code == 0 and events == []
    assert "10 status changes, 8 messages" in err


def test_simulate_refuses_unknown_servers_and_broken_configs(capsys, tmp_path):
    code, events, err = run(capsys, "--server", "nope")
    assert code == 1 and events == []
    assert "no server 'nope'" in err and "dworld" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text('servers:\n  - {snowflake: "1", id: a, name: A, simulation: {presence: {interval: soon}}}\n')
    code, events, err = run(capsys, "-c", str(bad))
    assert code == 1
    assert f"{bad}:2:72: servers[0].simulation.presence.interval: must be a duration" in err
    with pytest.raises(SystemExit):
        main(["simulate", "--seconds", "-5"])


def test_simulate_into_a_closed_pipe_ends_quietly():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "dbackd", "simulate", "--seconds", "1000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=20) == 0
    assert json.loads(first)["t"] == 4.0
    assert "Traceback" not in err and "step_failed" not in err
