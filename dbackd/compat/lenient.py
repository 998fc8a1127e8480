"""d-back's forgiving ways: what a d-back program hands over, made acceptable to dbackd.

d-back passed whatever its host program gave it straight to the sockets; dbackd checks
everything against its schemas. Between the two, these functions turn a d-back
program's provider answers, callback answers and broadcast arguments into what dbackd
accepts. What can be repaired is repaired (an `invisible` status becomes `offline`, a
short id used twice gets a suffix, an over-long message is cut); anything else is left
out; an id that is not a Discord id, as d-back's own examples use (`user123`), gets a
stand-in Discord id (standins.py). Each thing done is reported to the caller as a kind plus a few fields, so the
layer can log the first of each kind.

Functions on plain data: nothing here logs, awaits or touches a daemon, and the answers
handed in are never changed; the only state they touch is the stand-in table given. The fields reported hold ids and shapes, never
contents (what someone said, a password).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from dbackd.sources.apischema import schema as api_schema
from dbackd.config.schema import schema as config_schema
from dbackd.config.values import STATUSES, is_snowflake
from dbackd.compat.standins import StandIns

# (kind, fields) of each thing repaired or left out, in the order met.
Found = list[tuple[str, dict[str, Any]]]

# The limits are the schemas' own, so the layer repairs exactly what dbackd would refuse.
_DEFS = config_schema()["$defs"]
_SERVER = _DEFS["server"]["properties"]
_ID = re.compile(_SERVER["id"]["pattern"])
_ID_CHAR = re.compile(r"[A-Za-z0-9_.-]")
_ID_MAX = 64
_NAME_MAX = _SERVER["name"]["maxLength"]
_USERNAME_MAX = _DEFS["username"]["maxLength"]
_COLOR = re.compile(_DEFS["color"]["pattern"])
_MESSAGE = api_schema()["$defs"]["message"]["properties"]
_MESSAGE_MAX = _MESSAGE["message"]["maxLength"]
_CHANNEL_MAX = _MESSAGE["channel"]["maxLength"]

SERVER_KEYS = frozenset({"id", "name", "default", "passworded", "password"})  # what d-back's server entries hold
USER_KEYS = frozenset({"uid", "username", "status", "roleColor"})


def shape(value: Any) -> str:
    """What a value looks like, never what it says."""
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if value is None:
        return "None"
    if isinstance(value, (Mapping, list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a value of type {type(value).__name__}"


def ref(value: Any) -> Optional[str]:
    """An id as text (Discord libraries hold ids as ints); None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return None


def discord_id(value: Any, ids: StandIns, where: str, found: Found) -> Optional[str]:
    """An id as a Discord id: itself if it is one, else its stand-in; None if it is no id at all."""
    text = ref(value)
    if text is None:
        return None
    if is_snowflake(text):
        return text
    stand_in = ids.assign(text)
    if stand_in is not None:
        found.append((f"{where}.stand_in", {"id": text, "now": stand_in}))
    return stand_in


def _status(value: Any, where: str, found: Found) -> Optional[str]:
    """A status (an enum's text too, as discord.py's Status prints its value); None if unusable."""
    status = None if value is None else str(value)
    if status == "invisible":  # Discord shows an invisible member as offline
        found.append((f"{where}.invisible", {}))
        return "offline"
    return status if status in STATUSES else None


def _color(value: Any, where: str, found: Found) -> Optional[str]:
    if value is None:
        return None
    color = str(value)  # discord.py's Colour prints as #rrggbb
    if _COLOR.search(color):
        return color
    found.append((f"{where}.bad_color", {"given": shape(value)}))
    return None


def _username(value: Any, where: str, found: Found) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        found.append((f"{where}.bad_username", {"given": shape(value)}))
        return None
    if len(value) > _USERNAME_MAX:
        found.append((f"{where}.long_username", {"length": len(value)}))
        return value[:_USERNAME_MAX]
    return value


# -- the data providers' answers -----------------------------------------------------------

def servers(answer: Any, ids: StandIns, found: Found) -> Optional[dict[str, dict]]:
    """A server provider's answer, `{snowflake: {id, name, default?, passworded?, password?}}`,
    as dbackd takes it; None if it is not a mapping at all.

    A key that is not a Discord id gets a stand-in (one that is no id at all is left out). A missing or unusable short id is
    made from the one given (its letters, digits, '_', '.', '-') or else the snowflake;
    an id already taken gets the first free suffix -2, -3, ... in the answer's order, so
    the same answer always gives the same ids. Only the first server marked default stays
    default. Keys d-back did not know are dropped.
    """
    if not isinstance(answer, Mapping):
        found.append(("servers.not_a_mapping", {"answer": shape(answer)}))
        return None
    entries: list[tuple[str, Mapping, str]] = []
    for key, entry in answer.items():
        sf = discord_id(key, ids, "servers", found)
        if sf is None:
            found.append(("servers.bad_snowflake", {"key": shape(key)}))
            continue
        if not isinstance(entry, Mapping):
            found.append(("servers.bad_entry", {"server": sf, "entry": shape(entry)}))
            continue
        if any(sf == s for s, _, _ in entries):
            found.append(("servers.duplicate_snowflake", {"server": sf}))
            continue
        extra = [str(k) for k in entry if k not in SERVER_KEYS]
        if extra:
            found.append(("servers.extra_keys", {"server": sf, "keys": sorted(extra)[:5]}))
        entries.append((sf, entry, _wanted_id(sf, entry.get("id"), found)))
    wanted = {sid for _, _, sid in entries}
    taken: set[str] = set()
    out: dict[str, dict] = {}
    has_default = False
    for sf, entry, sid in entries:
        final = sid
        if final in taken:
            final = _free(sid, taken | wanted)
            found.append(("servers.id_taken", {"server": sf, "id": sid, "now": final}))
        taken.add(final)
        server: dict[str, Any] = {"id": final, "name": _name(sf, entry.get("name"), final, found),
                                  "default": bool(entry.get("default", False)),
                                  "passworded": bool(entry.get("passworded", False))}
        if server["default"]:
            if has_default:
                found.append(("servers.extra_default", {"server": sf}))
                server["default"] = False
            has_default = True
        password = entry.get("password")
        if isinstance(password, str) and password:
            server["password"] = password
        elif password not in (None, ""):
            found.append(("servers.bad_password", {"server": sf, "given": shape(password)}))
        out[sf] = server
    return out


def _wanted_id(sf: str, given: Any, found: Found) -> str:
    text = ref(given)
    if text is not None and _ID.search(text) and text != "default":
        return text
    kept = "".join(_ID_CHAR.findall(text or ""))[:_ID_MAX]
    sid = kept if kept and kept != "default" else sf
    found.append(("servers.bad_id", {"server": sf, "given": shape(given), "now": sid}))
    return sid


def _free(sid: str, used: set[str]) -> str:
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = sid[:_ID_MAX - len(suffix)] + suffix
        if candidate not in used:
            return candidate
        n += 1


def _name(sf: str, given: Any, sid: str, found: Found) -> str:
    name = given if isinstance(given, str) else (str(given) if isinstance(given, (int, float)) else None)
    if not name or not name.strip():
        found.append(("servers.bad_name", {"server": sf, "given": shape(given)}))
        return sid
    if len(name) > _NAME_MAX:
        found.append(("servers.long_name", {"server": sf, "length": len(name)}))
        return name[:_NAME_MAX]
    return name


def users(server: str, answer: Any, ids: StandIns, found: Found) -> Optional[dict[str, dict]]:
    """A user provider's answer for one server, `{uid: {uid?, username, status?, roleColor?}}`,
    as dbackd takes it; None if it is not a mapping at all.

    A key that is not a Discord id gets a stand-in (one that is no id at all is left out); a missing name becomes the uid,
    `invisible` and unknown statuses `offline`, an unusable colour the default. Keys
    d-back did not know are dropped.
    """
    if not isinstance(answer, Mapping):
        found.append(("users.not_a_mapping", {"server": server, "answer": shape(answer)}))
        return None
    out: dict[str, dict] = {}
    for key, entry in answer.items():
        uid = discord_id(key, ids, "users", found)
        if uid is None:
            found.append(("users.bad_uid", {"server": server, "key": shape(key)}))
            continue
        if not isinstance(entry, Mapping):
            found.append(("users.bad_entry", {"server": server, "uid": uid, "entry": shape(entry)}))
            continue
        extra = [str(k) for k in entry if k not in USER_KEYS]
        if extra:
            found.append(("users.extra_keys", {"server": server, "keys": sorted(extra)[:5]}))
        if entry.get("username") is None:
            found.append(("users.no_username", {"server": server, "uid": uid}))
        user: dict[str, Any] = {"username": _username(entry.get("username"), "users", found) or uid}
        if "status" in entry:
            status = _status(entry["status"], "users", found)
            if status is None:
                found.append(("users.bad_status", {"server": server, "given": shape(entry["status"])}))
                status = "offline"
            user["status"] = status
        color = _color(entry.get("roleColor"), "users", found)
        if color is not None:
            user["roleColor"] = color
        out[uid] = user
    return out


def size(answer: Any) -> int:
    return len(answer) if isinstance(answer, (Mapping, list, tuple)) else 0


# -- the other callbacks' answers -------------------------------------------------------------

def client_id(answer: Any, ids: StandIns, where: str, found: Found) -> Optional[str]:
    """An OAuth2 application id, or None: d-back took "" (and any false value) for none."""
    if answer is None or answer == "" or answer is False:
        return None
    text = discord_id(answer, ids, where, found)
    if text is None:
        found.append((f"{where}.bad_id", {"given": shape(answer)}))
    return text


def static(answer: Any) -> Any:
    """d-back served `(content_type, "path")` as the file at that path; dbackd takes a Path for
    that (and bytes as the body itself). Anything else is dbackd's to judge."""
    if isinstance(answer, (tuple, list)) and len(answer) == 2 and isinstance(answer[0], str) \
            and isinstance(answer[1], (str, os.PathLike)):
        return answer[0], Path(os.fspath(answer[1]))
    return answer


# -- the broadcasts' arguments --------------------------------------------------------------

def presence(uid: Any, status: Any, username: Any, role_color: Any, delete: Any, ids: StandIns,
             found: Found) -> Optional[dict[str, Any]]:
    """broadcast_presence's arguments as dbackd's takes them; None to drop the call."""
    user = discord_id(uid, ids, "presence", found)
    if user is None:
        found.append(("presence.bad_uid", {"given": shape(uid)}))
        return None
    delete = bool(delete)
    state = _status(status, "presence", found)
    if state is None:
        if not delete:  # a removal does not need a status; anything else does
            found.append(("presence.bad_status", {"given": shape(status)}))
            return None
        state = "offline"
    return {"uid": user, "status": state, "username": _username(username, "presence", found),
            "role_color": _color(role_color, "presence", found), "delete": delete}


def message(uid: Any, text: Any, channel: Any, ids: StandIns, found: Found) -> Optional[dict[str, Any]]:
    """broadcast_message's arguments as dbackd's takes them; None to drop the call."""
    user = discord_id(uid, ids, "message", found)
    if user is None:
        found.append(("message.bad_uid", {"given": shape(uid)}))
        return None
    if not isinstance(text, str):
        found.append(("message.not_text", {"given": shape(text)}))
        return None
    if not text:  # an attachment or an embed alone: nothing to say
        found.append(("message.empty", {}))
        return None
    if len(text) > _MESSAGE_MAX:
        found.append(("message.too_long", {"length": len(text), "kept": _MESSAGE_MAX}))
        text = text[:_MESSAGE_MAX]
    where = ref(channel)
    if not where or len(where) > _CHANNEL_MAX:
        found.append(("message.bad_channel", {"given": shape(channel)}))
        return None
    return {"uid": user, "message": text, "channel": where}
