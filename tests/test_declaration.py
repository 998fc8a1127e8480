"""The declaration: the providers' answers checked and laid over the config, and the world moved to the result."""
from __future__ import annotations

import asyncio

import pytest

from dbackd.config import ConfigError, load_text
from dbackd.core.declaration import Declaration
from dbackd.sources.providers import BadAnswer, Provided, overlay
from dbackd.core.world import World

from .conftest import ROOT

BASE = """
servers:
  - snowflake: "1"
    id: home
    name: Home
    default: true
    users: [{uid: "11", username: alice, roleColor: "#111111"}, {uid: "12", username: bob}]
  - {snowflake: "2", id: priv, name: Private, passworded: true, password: "${P}"}
"""


def base():
    return load_text(BASE, "t.yaml", ROOT, {"P": "secret-password"})


def problems(provided: Provided) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        overlay(base(), provided)
    return [p.message for p in caught.value.problems]


def test_nothing_provided_is_the_base_itself():
    b = base()
    assert overlay(b, None) is b and overlay(b, Provided()) is b


def test_users_are_added_and_a_declared_uid_takes_the_providers_fields():
    merged = overlay(base(), Provided(users={"1": {"31": {"username": "bot", "status": "idle"},
                                                   "11": {"username": "Alice!"}}}))
    users = {u.uid: u for u in merged.servers[0].users}
    assert list(users) == ["11", "12", "31"]
    assert (users["11"].username, users["11"].role_color) == ("Alice!", "#ffffff")  # the provider's, with defaults
    assert (users["31"].status, users["31"].role_color) == ("idle", "#ffffff")


def test_servers_change_the_fields_they_give_and_others_are_added():
    merged = overlay(base(), Provided(servers={"1": {"id": "home", "name": "Home (bot)"},
                                               "3": {"id": "new", "name": "New"}},
                                      users={"3": [{"uid": "33", "username": "n"}]}))
    home, priv, new = merged.servers
    assert (home.name, home.default, len(home.users)) == ("Home (bot)", True, 2)
    assert priv.password == "secret-password"
    assert (new.id, [u.uid for u in new.users]) == ("new", ["33"])


def test_problems_are_named_by_server_and_user():
    found = problems(Provided(users={"1": {"31": {"username": "bot", "status": "away"}, "x1": {"username": "b"},
                                           "32": {"username": "c", "colour": "red"}}}))
    assert any(p.startswith('server home, user 31: status: "away" is not one of') for p in found)
    assert any(p.startswith("server home, user x1: uid: must be a Discord id") for p in found)
    assert any(p.startswith("server home, user 32: colour: unknown key `colour`") for p in found)


def test_rules_across_servers():
    assert any("duplicate server id 'home'" in p for p in problems(Provided(servers={"3": {"id": "home", "name": "X"}})))
    assert any("only one server may be the default" in p
               for p in problems(Provided(servers={"3": {"id": "x", "name": "X", "default": True}})))
    assert any("neither configured nor provided" in p for p in problems(Provided(users={"9": {"91": {"username": "u"}}})))
    assert any("duplicate user uid '31'" in p
               for p in problems(Provided(users={"1": [{"uid": "31", "username": "a"}, {"uid": "31", "username": "b"}]})))


def test_an_answer_of_the_wrong_shape():
    with pytest.raises(BadAnswer) as caught:
        overlay(base(), Provided(users={"1": ["not", "users"]}))
    assert caught.value.callback == "on_get_user_data" and caught.value.shape == "a list of 2 (str)"
    with pytest.raises(BadAnswer):
        overlay(base(), Provided(servers={"1": "home"}))


def test_the_answer_itself_is_never_changed():
    answer = {"31": {"username": "bot"}}
    overlay(base(), Provided(users={"1": answer}))
    assert answer == {"31": {"username": "bot"}}


async def test_a_refresh_moves_the_world_and_a_conflicting_file_is_refused():
    world = World(base())
    declaration = Declaration(world)
    lines = await declaration.provide(Provided(users={"1": {"31": {"username": "bot"}}}))
    assert lines == ["+ user home/31 bot (online, #ffffff)"] and "31" in world.servers["1"].users
    # A new file keeps the providers' answer over it ...
    renamed = load_text(BASE.replace("name: Home", "name: Home2"), "t.yaml", ROOT, {"P": "p"})
    await declaration.replace(renamed)
    assert world.servers["1"].info.name == "Home2" and "31" in world.servers["1"].users
    # ... and one that conflicts with it is refused, changing nothing.
    with pytest.raises(ConfigError):
        await declaration.provide(Provided(servers={"3": {"id": "home", "name": "Clash"}}))
    assert world.config.servers[0].name == "Home2" and set(world.servers) == {"1", "2"}


async def test_a_big_move_lets_the_loop_run():
    world = World(base())
    declaration = Declaration(world)
    turns = 0
    done = False

    async def count_turns() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count_turns())
    users = {str(10**17 + i): {"username": f"u{i}"} for i in range(5000)}
    await declaration.provide(Provided(users={"1": users}))
    done = True
    await counter
    assert len(world.servers["1"].users) == 5002
    assert turns >= 5000 // 500  # at least one loop turn per slice of events
