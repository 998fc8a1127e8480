"""docs/deploy.md stays true to the code: its config works, its metric names exist, its proxies pass the upgrade."""
from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from dbackd.config import load_text

from .conftest import EXAMPLE, ROOT

DEPLOY = (ROOT / "docs" / "deploy.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DEPLOY, re.S)


def test_readme_links_the_deployment_guide():
    assert "docs/deploy.md" in (ROOT / "README.md").read_text()


def test_the_config_in_the_guide_loads(tmp_path):
    config_block = next(b for b in blocks("yaml") if "servers:" in b)
    text = config_block.replace("/srv/d-zone", str(tmp_path))
    config = load_text(text, "dback.yaml", ROOT, env={"TEAM_PASSWORD": "12345"})
    assert config.servers[1].password == "12345"  # quoted, so digits stay a string
    assert config.static[0].dir == tmp_path and config.metrics.enabled


def test_the_proxies_pass_the_upgrade_and_hide_metrics():
    nginx, = blocks("nginx")
    assert "proxy_set_header Upgrade $http_upgrade;" in nginx
    assert "proxy_set_header Connection $connection_upgrade;" in nginx
    assert "proxy_http_version 1.1;" in nginx and "location = /metrics" in nginx
    caddy, = blocks("caddyfile")
    assert "reverse_proxy 127.0.0.1:3000" in caddy and "respond /metrics 404" in caddy


async def test_every_metric_in_the_guide_exists_and_every_metric_is_in_the_guide(start_daemon, http):
    d = await start_daemon(EXAMPLE)
    async with http.get(f"http://127.0.0.1:{d.port}/metrics") as response:
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    served = {f"{name}_total" if f.type == "counter" else name
              for name, f in families.items() if name.startswith("dbackd_") and not name.endswith("_created")}
    documented = set(re.findall(r"`(dbackd_[a-z_]+)", DEPLOY))
    # The cluster's own metrics exist only with a cluster block (tests/test_cluster.py checks them).
    assert {m for m in documented if not m.startswith("dbackd_cluster_")} == served
