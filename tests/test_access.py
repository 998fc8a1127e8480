"""Who may join a passworded server: the legacy password, or the one login verifier."""
from __future__ import annotations

from dbackd.edge.access import Access, Verdict
from dbackd.config import load_text
from dbackd.fanout.protocol import Connect

from .conftest import ROOT

CONFIG = """
servers:
  - {snowflake: "1", id: pub, name: Public}
  - {snowflake: "2", id: priv, name: Private, passworded: true, password: "${P}", access: {any_discord_user: true}}
  - {snowflake: "3", id: nopw, name: No password, passworded: true, access: {any_discord_user: true}}
"""


def servers():
    return {s.id: s for s in load_text(CONFIG, "t.yaml", ROOT, {"P": "hunter2"}).servers}


def connect(server: str, password=None, token=None, user=None) -> Connect:
    return Connect(server, password, token, user)


async def test_rules():
    asked = []

    async def verify(server, token, claimed) -> bool:
        asked.append((server.id, token, claimed))
        return token == "good"

    access, s = Access(verify), servers()
    assert await access.check(s["pub"], connect("pub")) is Verdict.ALLOWED
    assert await access.check(s["priv"], connect("priv", password="hunter2")) is Verdict.ALLOWED
    assert await access.check(s["priv"], connect("priv", password="hunter3")) is Verdict.AUTH_REQUIRED
    assert await access.check(s["nopw"], connect("nopw", password="anything")) is Verdict.AUTH_REQUIRED
    assert await access.check(s["priv"], connect("priv")) is Verdict.AUTH_REQUIRED
    assert asked == []  # no credentials, no verifier
    user = {"id": "80351110224678912"}
    assert await access.check(s["priv"], connect("priv", token="good", user=user)) is Verdict.ALLOWED
    assert await access.check(s["priv"], connect("priv", token="bad", user=user)) is Verdict.AUTH_FAILED
    assert await access.check(s["priv"], connect("priv", token="good")) is Verdict.AUTH_REQUIRED  # a claim is needed
    assert [(sid, t) for sid, t, _ in asked] == [("priv", "good"), ("priv", "bad")]
    assert asked[0][2] == user and asked[0][2] is not user  # a copy: the verifier cannot change the request
