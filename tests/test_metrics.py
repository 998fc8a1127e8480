"""/metrics: Prometheus text that prometheus-client's own parser reads, with numbers that move."""
from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from dbackd.config import load_file

from .conftest import EXAMPLE
from .test_socket_protocol import PRIVATE


async def scrape(http, daemon) -> dict[tuple[str, tuple], float]:
    """Every sample as (name, sorted labels) -> value."""
    async with http.get(f"http://127.0.0.1:{daemon.port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_every_metric_exists_from_the_start(start_daemon, http):
    d = await start_daemon(EXAMPLE)
    m = await scrape(http, d)
    assert value(m, "dbackd_connections") == 0
    assert value(m, "dbackd_servers") == 4
    for server in ("dworld", "docs", "oauth", "repos"):
        assert value(m, "dbackd_server_connections", server=server) == 0
    assert value(m, "dbackd_frames_sent_total") == 0
    assert value(m, "dbackd_slow_clients_dropped_total") == 0
    for reason in ("unknown_server", "auth_failed", "auth_required"):
        assert value(m, "dbackd_join_refusals_total", reason=reason) == 0
    for kind in ("presence_changed", "message_sent", "client_id_changed", "server_list_changed", "server_closed"):
        assert value(m, "dbackd_world_events_total", kind=kind) == 0
    assert value(m, "dbackd_config_reloads_total") == 0
    assert value(m, "dbackd_config_reloads_failed_total") == 0
    assert value(m, "dbackd_config_last_reload_successful") == 1
    assert value(m, "dbackd_config_last_reload_success_timestamp_seconds") == d.loaded_at.timestamp()
    for outcome in ("allowed", "denied", "invalid_token", "mismatch", "discord_error", "timeout", "rate_limited"):
        assert value(m, "dbackd_oauth_verifications_total", outcome=outcome) == 0
    assert value(m, "dbackd_oauth_verification_seconds_count") == 0
    assert value(m, "dbackd_build_info", version=d.health()["version"]) == 1
    assert value(m, "dbackd_uptime_seconds") >= 0


async def test_counters_move_with_joins_refusals_events_and_frames(start_daemon, open_client, http):
    d = await start_daemon(text=PRIVATE)
    a = await open_client(d)
    b = await open_client(d)
    await a.connect("pub")
    await b.connect("pub")
    assert (await a.connect("nope"))["type"] == "error"
    assert (await a.connect("legacy"))["type"] == "error"  # no password: auth_required
    assert (await a.connect("legacy", password="hunter2"))["type"] == "server-join"
    m = await scrape(http, d)
    assert value(m, "dbackd_connections") == 2
    assert value(m, "dbackd_server_connections", server="pub") == 1
    assert value(m, "dbackd_server_connections", server="legacy") == 1
    assert value(m, "dbackd_joins_total", server="pub", via="public") == 2
    assert value(m, "dbackd_joins_total", server="legacy", via="auth") == 1
    assert value(m, "dbackd_join_refusals_total", reason="unknown_server") == 1
    assert value(m, "dbackd_join_refusals_total", reason="auth_required") == 1
    frames_before = value(m, "dbackd_frames_sent_total")
    assert frames_before == 2 + 2 + 3  # two server-lists, two joins, two errors and one join for a

    d.world.set_presence("1", "11", "idle")
    d.world.say("1", "11", "hello", "7")
    await b.recv_type("presence")
    await b.recv_type("message")
    m = await scrape(http, d)
    assert value(m, "dbackd_world_events_total", kind="presence_changed") == 1
    assert value(m, "dbackd_world_events_total", kind="message_sent") == 1
    assert value(m, "dbackd_frames_sent_total") == frames_before + 2  # only b is in pub now


async def test_reload_and_oauth_reports(start_daemon, http):
    d = await start_daemon(EXAMPLE)
    d.moments.reload_started()
    d.moments.reload_finished(True)
    before_failure = time.time()
    d.moments.reload_started()
    d.moments.reload_finished(False, "bad file")
    m = await scrape(http, d)
    assert value(m, "dbackd_config_reloads_total") == 2
    assert value(m, "dbackd_config_reloads_failed_total") == 1
    assert value(m, "dbackd_config_last_reload_successful") == 0
    success_time = value(m, "dbackd_config_last_reload_success_timestamp_seconds")
    assert d.loaded_at.timestamp() < success_time <= before_failure  # the successful one, not the failure

    d.metrics.oauth_verification("allowed", 0.12)
    d.metrics.oauth_verification("denied", 0.03)
    d.metrics.oauth_verification("timeout", 10.0)
    m = await scrape(http, d)
    assert value(m, "dbackd_oauth_verifications_total", outcome="allowed") == 1
    assert value(m, "dbackd_oauth_verifications_total", outcome="timeout") == 1
    assert value(m, "dbackd_oauth_verification_seconds_count") == 3
    assert value(m, "dbackd_oauth_verification_seconds_bucket", le="0.25") == 2
    assert value(m, "dbackd_config_last_reload_successful") == 0
    d.moments.reload_finished(True)
    assert value(await scrape(http, d), "dbackd_config_last_reload_successful") == 1


async def test_each_daemon_counts_for_itself(start_daemon, open_client, http):
    one = await start_daemon(EXAMPLE)
    two = await start_daemon(EXAMPLE)
    client = await open_client(one)
    await client.connect("dworld")
    assert value(await scrape(http, one), "dbackd_joins_total", server="dworld", via="public") == 1
    assert ("dbackd_joins_total", (("server", "dworld"), ("via", "public"))) not in await scrape(http, two)


async def test_openmetrics_when_asked(start_daemon, http):
    d = await start_daemon(EXAMPLE)
    async with http.get(f"http://127.0.0.1:{d.port}/metrics",
                        headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).endswith("# EOF\n")


async def test_metrics_can_be_turned_off(start_daemon, http):
    text = (EXAMPLE.read_text() + "\nmetrics:\n  enabled: false\n")
    d = await start_daemon(text=text)
    assert d.config.metrics.enabled is False
    async with http.get(f"http://127.0.0.1:{d.port}/metrics") as response:
        assert response.status == 404
    assert load_file(EXAMPLE).metrics.enabled is True
