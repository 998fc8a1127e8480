"""The immutable, typed config model that the rest of dbackd reads.

Built only from data the schema has already validated (defaults filled in), so it
does no checking of its own; it never changes after it is built. A reload builds a
new model and the world is moved from the old one to the new one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional

STATUSES = ("online", "idle", "dnd", "offline")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*$")


def seconds(value: Any) -> float:
    """A schema `duration` (number or "4s"/"2m"/"500ms") as float seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def freeze(value: Any) -> Any:
    """Deep-freeze plain data: dicts become read-only mappings, lists tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class User:
    uid: str
    username: str
    status: str = "online"
    role_color: str = "#ffffff"


@dataclass(frozen=True)
class Server:
    snowflake: str
    id: str
    name: str
    default: bool = False
    passworded: bool = False
    password: Optional[str] = field(default=None, repr=False)
    users: tuple[User, ...] = ()

    def public_info(self) -> dict[str, Any]:
        """What the client may see in server-list: never the password or access rules."""
        info: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.default:
            info["default"] = True
        info["passworded"] = self.passworded
        return info


@dataclass(frozen=True)
class Mount:
    path: str  # normalised: "/" or "/prefix" without trailing slash
    dir: Optional[Path]  # None for the built-in page
    index: str = "index.html"

    @property
    def ws_path(self) -> str:
        return "/ws" if self.path == "/" else f"{self.path}/ws"


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 3000


@dataclass(frozen=True)
class Logging:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 65536
    send_buffer_bytes: int = 1048576
    heartbeat: float = 30.0


@dataclass(frozen=True)
class Rate:
    per_second: float = 50.0
    burst: int = 100


@dataclass(frozen=True)
class Api:
    """The HTTP API's settings; it is off while `tokens` is empty."""

    tokens: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = 65536
    rate: Rate = Rate()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)


@dataclass(frozen=True)
class Config:
    servers: tuple[Server, ...]
    listen: Listen = Listen()
    static: tuple[Mount, ...] = ()
    logging: Logging = Logging()
    limits: Limits = Limits()
    api: Api = Api()
    file: Optional[str] = None  # where it was read from; None for a dict
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)  # warnings worth showing in `check`

    def server(self, ref: Optional[str]) -> Optional[Server]:
        """Find a server by short id, "default", or guild snowflake (lenient, as the protocol asks)."""
        if ref is None or not str(ref).strip() or ref == "default":
            return next((s for s in self.servers if s.default), None)
        ref = str(ref).strip()
        for s in self.servers:
            if s.id == ref:
                return s
        for s in self.servers:
            if s.snowflake == ref:
                return s
        return None


def build(data: Mapping[str, Any], base_dir: Path, file: Optional[str], notes: tuple[str, ...] = ()) -> Config:
    """Turn validated, default-filled data into the model."""
    servers = tuple(
        Server(
            snowflake=s["snowflake"],
            id=s["id"],
            name=s["name"],
            default=s["default"],
            passworded=s["passworded"],
            password=s.get("password"),
            users=tuple(
                User(uid=u["uid"], username=u["username"], status=u["status"], role_color=u["roleColor"].lower())
                for u in s["users"]
            ),
        )
        for s in data["servers"]
    )
    static = tuple(
        Mount(
            path=normalise_prefix(m["path"]),
            dir=None if m.get("builtin") else (base_dir / m["dir"]).resolve(),
            index=m["index"],
        )
        for m in data["static"]
    )
    lim = data["limits"]
    return Config(
        servers=servers,
        listen=Listen(**data["listen"]),
        static=static,
        logging=Logging(**data["logging"]),
        limits=Limits(
            max_message_bytes=lim["max_message_bytes"],
            send_buffer_bytes=lim["send_buffer_bytes"],
            heartbeat=seconds(lim["heartbeat"]),
        ),
        api=Api(
            tokens=tuple(data["api"]["tokens"]),
            max_body_bytes=data["api"]["max_body_bytes"],
            rate=Rate(float(data["api"]["rate"]["per_second"]), data["api"]["rate"]["burst"]),
        ),
        file=file,
        raw=freeze(dict(data)),
        notes=notes,
    )


def normalise_prefix(path: str) -> str:
    stripped = "/" + path.strip("/")
    return stripped if stripped != "//" else "/"
