"""The immutable, typed config model that the rest of dbackd reads.

Built only from data the schema has already validated (defaults filled in), so it
does no checking of its own; it never changes after it is built. A reload builds a
new model and the world is moved from the old one to the new one.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Optional

from dbackd.config.generated import generated_users
from dbackd.config.sections import sections
from dbackd.config.paths import located
from dbackd.config.values import STATUSES, WHITE, color, seconds, time_of_day


@dataclass(frozen=True, slots=True)
class User:
    uid: str
    username: str
    status: str = "online"
    role_color: str = WHITE


@dataclass(frozen=True)
class MockUser:
    """Who a token of the mock provider stands for."""

    id: str
    username: str


@dataclass(frozen=True)
class OAuth:
    """A server's effective OAuth2 settings: the top-level block with the server's keys over it."""

    provider: str = "discord"  # "discord" or "mock"
    client_id: Optional[str] = None
    client_secret: Optional[str] = field(default=None, repr=False)
    bot_token: Optional[str] = field(default=None, repr=False)
    api_base: str = "https://discord.com/api/v10"  # without a trailing slash
    timeout: float = 5.0
    cache_ttl: float = 300.0
    # (token, user) pairs rather than a mapping, so the model stays hashable.
    tokens: tuple[tuple[str, MockUser], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class AccessRules:
    """Who may enter a passworded server by Discord login; any one matching rule is enough."""

    users: tuple[str, ...] = ()
    guild_members: bool = False
    roles: tuple[str, ...] = ()
    any_discord_user: bool = False

    @property
    def any(self) -> bool:
        """True when at least one rule can let someone in."""
        return bool(self.users or self.guild_members or self.roles or self.any_discord_user)

    @property
    def needs_member(self) -> bool:
        """True when a rule asks Discord about guild membership (with the bot token)."""
        return self.guild_members or bool(self.roles)


@dataclass(frozen=True)
class Choice:
    """Values with relative weights, for a weighted random pick (only values with weight > 0)."""

    values: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def of(cls, weights: Mapping[str, float], order: Optional[tuple[str, ...]] = None) -> "Choice":
        keys = [k for k in (order or tuple(weights)) if weights.get(k, 0) > 0]
        return cls(tuple(keys), tuple(float(weights[k]) for k in keys))

    @property
    def uniform(self) -> bool:
        return len(set(self.weights)) <= 1

    @cached_property
    def cum_weights(self) -> tuple[float, ...]:
        return tuple(itertools.accumulate(self.weights))

    def pick(self, rng: "random.Random") -> str:
        if self.uniform:
            return self.values[rng.randrange(len(self.values))]
        return rng.choices(self.values, cum_weights=self.cum_weights)[0]


@dataclass(frozen=True)
class Rate:
    """How often a step happens: mean (or exact) interval in seconds; 0 means never."""

    interval: float
    timing: str = "exponential"  # or "fixed"
    per: str = "server"  # or "user": each user has this interval, the server's rate grows with them


@dataclass(frozen=True)
class UserPresence:
    uid: str
    weight: float = 1.0
    transitions: tuple[tuple[str, Choice], ...] = ()


@dataclass(frozen=True)
class PresenceRules:
    rate: Rate
    transitions: tuple[tuple[str, Choice], ...]  # (status, next-status weights); no row: kept
    users: tuple[UserPresence, ...] = ()

    def row(self, status: str, user: Optional[UserPresence] = None) -> Optional[Choice]:
        for table in ((user.transitions if user else ()), self.transitions):
            for s, choice in table:
                if s == status:
                    return choice
        return None


@dataclass(frozen=True)
class MessageRules:
    rate: Rate
    corpus: tuple[str, ...]
    channels: Choice
    statuses: tuple[str, ...]
    chattiness: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Activity:
    timezone: str
    points: tuple[tuple[float, float], ...]  # (seconds after local midnight, multiplier), sorted


@dataclass(frozen=True)
class Churn:
    arrivals: Rate
    departures: Rate
    max: int
    status: str
    names: Any  # a pattern with {n} (str) or a tuple of words
    colors: tuple[str, ...]


@dataclass(frozen=True)
class Simulation:
    """One server's merged simulation rules (see config/simulation.py for how they are layered)."""

    seed: Optional[Any]
    presence: PresenceRules
    messages: MessageRules
    activity: Optional[Activity] = None
    churn: Optional[Churn] = None
    generated: int = 0  # how many of the server's users `generate` made


@dataclass(frozen=True)
class Server:
    snowflake: str
    id: str
    name: str
    default: bool = False
    passworded: bool = False
    password: Optional[str] = field(default=None, repr=False)
    users: tuple[User, ...] = ()
    oauth: OAuth = OAuth()
    access: AccessRules = AccessRules()
    simulation: Optional[Simulation] = None  # None: not simulated
    source: str = "config"  # or the key of a source's section (config/sections.py): its members are that source's
    options: Any = None  # a section's server: the options its source reads (its keys over the section's defaults)
    named: bool = True  # False: the config gave no name (a source's server may take the name it finds)

    @property
    def gate(self) -> tuple:
        """What decides who gets in (not the client id, timeouts or cache): equal gates, equal answers."""
        o = self.oauth
        return self.passworded, self.password, self.access, o.provider, o.api_base, o.bot_token, o.tokens

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
    sockets: tuple[str, ...] = ()  # other daemons' socket origins the built-in page may use, as browsers write them
    frame_ancestors: tuple[str, ...] = ()  # origins of the sites that may frame the built-in page

    @property
    def ws_path(self) -> str:
        return "/ws" if self.path == "/" else f"{self.path}/ws"


@dataclass(frozen=True)
class Tls:
    """Certificate chain and private key files (PEM), read again when they change."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 3000
    tls: Optional[Tls] = None
    trusted_proxies: tuple = ()  # ip networks whose X-Forwarded-For is believed
    operators: tuple = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))  # probes, scrapers

    @property
    def bound(self) -> tuple:
        """What needs a restart to change: the listening sockets (and how they speak)."""
        return self.host, self.port, self.tls

    def trusts(self, peer: Optional[str]) -> bool:
        """True when `peer` (an address as text) is one of the trusted proxies."""
        return _within(peer, self.trusted_proxies)

    def operator(self, peer: Optional[str], proxies: bool = False) -> bool:
        """True when `peer` is on the operator's side (`operators`), and not a trusted proxy
        (which carries the public) unless `proxies`."""
        return _within(peer, self.operators) and (proxies or not self.trusts(peer))


def _within(peer: Optional[str], networks: tuple) -> bool:
    if not networks or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in net for net in networks)


@dataclass(frozen=True)
class Logging:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class Limits:
    """The `limits` block. Read from its own fields (see `build_limits`): a key here is a key in the YAML."""

    max_message_bytes: int = 65536
    send_buffer_bytes: int = 1048576
    heartbeat: float = 30.0
    frames_per_second: float = 20.0
    frames_burst: int = 60
    joins_per_second: float = 2.0
    joins_burst: int = 10
    max_connections: int = 10000
    reserved_connections: int = 32
    max_connections_per_address: int = 128
    sockets_per_second: float = 5.0
    sockets_burst: int = 128
    oauth_checks_per_address: int = 8
    oauth_checks_per_minute: int = 30
    handshake_timeout: float = 10.0
    header_timeout: float = 15.0
    body_timeout: float = 30.0
    join_timeout: float = 60.0


@dataclass(frozen=True)
class WebSocket:
    compression: bool = False


@dataclass(frozen=True)
class MetricsEndpoint:
    enabled: bool = True


@dataclass(frozen=True)
class ApiRate:
    """A token bucket: `per_second` on average, `burst` at once."""

    per_second: float = 50.0
    burst: int = 100


@dataclass(frozen=True)
class Api:
    """The HTTP API's settings; it is off while `tokens` is empty."""

    tokens: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = 65536
    rate: ApiRate = ApiRate()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)


@dataclass(frozen=True)
class Cluster:
    """The `cluster` block: the Redis that several nodes share the world through."""

    redis: str = field(repr=False)  # a URL; it may carry a password
    prefix: str = "dbackd"
    node: Optional[str] = None  # None: host name and process id
    lease: float = 3.0
    timeout: float = 2.0


@dataclass(frozen=True)
class Config:
    servers: tuple[Server, ...]
    listen: Listen = Listen()
    static: tuple[Mount, ...] = ()
    logging: Logging = Logging()
    limits: Limits = Limits()
    websocket: WebSocket = WebSocket()
    metrics: MetricsEndpoint = MetricsEndpoint()
    api: Api = Api()
    sections: tuple[tuple[str, Any], ...] = ()  # (key, settings) of each source's section given (config/sections.py)
    cluster: Optional[Cluster] = None
    workers: int = 1
    file: Optional[str] = None  # where it was read from; None for a dict
    includes: tuple[Path, ...] = ()  # other files it read (corpus files), followed by reloads
    notes: tuple[str, ...] = field(default=(), compare=False)  # warnings worth showing in `check`

    def section(self, key: str) -> Any:
        """The settings of a source's section (the model of the source's package), or None if not given."""
        for name, settings in self.sections:
            if name == key:
                return settings
        return None

    def server(self, ref: Optional[str]) -> Optional[Server]:
        """Find a server by short id, "default", or guild snowflake (lenient, as the protocol asks)."""
        if ref is None or not str(ref).strip() or ref == "default":
            # Without a marked default, the first public server: a frontend with no world yet asks
            # for "default" again after every error, so "none" would be a loop of errors.
            return (next((s for s in self.servers if s.default), None)
                    or next((s for s in self.servers if not s.passworded), None))
        ref = str(ref).strip()
        for s in self.servers:
            if s.id == ref:
                return s
        for s in self.servers:
            if s.snowflake == ref:
                return s
        return None


def effective_oauth(top: Any, server: Any) -> dict[str, Any]:
    """A server's OAuth2 settings as plain data: the top-level block, the server's keys over it.

    Reads defensively (the loader's rules call it on data the schema may have refused).
    """
    merged = dict(top) if isinstance(top, dict) else {}
    if isinstance(server, dict) and isinstance(server.get("oauth"), dict):
        merged.update(server["oauth"])
    return merged


def _oauth(data: Mapping[str, Any]) -> OAuth:
    return OAuth(
        provider=data["provider"],
        client_id=data.get("client_id"),
        client_secret=data.get("client_secret"),
        bot_token=data.get("bot_token"),
        api_base=data["api_base"].rstrip("/"),
        timeout=seconds(data["timeout"]),
        cache_ttl=seconds(data["cache_ttl"]),
        tokens=tuple((token, MockUser(u["id"], u["username"])) for token, u in (data.get("tokens") or {}).items()),
    )


def socket_origin(text: str) -> str:
    """A socket (or page) origin as a browser's `URL.origin` writes it: lower case, no default port."""
    origin = text.lower().rstrip("/")
    for scheme, port in (("ws://", ":80"), ("wss://", ":443"), ("http://", ":80"), ("https://", ":443")):
        if origin.startswith(scheme) and origin.endswith(port):
            return origin[:-len(port)]
    return origin


def build_limits(block: Mapping[str, Any], cls: type = Limits) -> Any:
    """The `limits` block as the model: every key is one of `cls`'s fields, typed by it.

    An int field takes the count as it is; a float field takes a number or a duration
    ("30s"; the schema says which a key accepts). A key without a field is an error here,
    never a value silently dropped.
    """
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = sorted(set(block) - set(types))
    if unknown:
        raise TypeError(f"limits keys without a field in {cls.__name__}: {', '.join(unknown)}")
    return cls(**{key: int(value) if types[key] in (int, "int") else seconds(value) for key, value in block.items()})



def build(data: Mapping[str, Any], base_dir: Path, file: Optional[str], notes: tuple[str, ...] = (),
          simulations: Optional[list] = None) -> Config:
    """Turn validated, default-filled data into the model.

    `simulations` holds each server's merged simulation rules (plain data, or None when
    the server is not simulated), as config/simulation.py resolves them.
    """
    sims = simulations or [None] * len(data["servers"])
    given = tuple((key, section.settings(data[key])) for key, section in sections().items() if data.get(key))
    servers = tuple(_server(s, sim, data["oauth"], dict(given)) for s, sim in zip(data["servers"], sims))
    static = tuple(
        Mount(
            path=normalise_prefix(m["path"]),
            dir=None if m.get("builtin") else (base_dir / m["dir"]).resolve(),
            index=m["index"],
            sockets=tuple(socket_origin(o) for o in m.get("sockets", ())),
            frame_ancestors=tuple(socket_origin(o) for o in m.get("frame_ancestors", ())),
        )
        for m in data["static"]
    )
    listen = data["listen"]
    tls = listen.get("tls")
    return Config(
        servers=servers,
        listen=Listen(
            host=listen["host"],
            port=listen["port"],
            tls=None if tls is None else Tls(located(base_dir, tls["cert"]), located(base_dir, tls["key"])),
            trusted_proxies=tuple(ipaddress.ip_network(p, strict=False) for p in listen["trusted_proxies"]),
            operators=tuple(ipaddress.ip_network(p, strict=False) for p in listen["operators"]),
        ),
        static=static,
        logging=Logging(**data["logging"]),
        limits=build_limits(data["limits"]),
        websocket=WebSocket(**data["websocket"]),
        metrics=MetricsEndpoint(**data["metrics"]),
        api=Api(
            tokens=tuple(data["api"]["tokens"]),
            max_body_bytes=data["api"]["max_body_bytes"],
            rate=ApiRate(float(data["api"]["rate"]["per_second"]), data["api"]["rate"]["burst"]),
        ),
        sections=given,
        cluster=_cluster(data.get("cluster")),
        workers=data["workers"],
        file=file,
        notes=notes,
    )


def _cluster(block: Optional[Mapping[str, Any]]) -> Optional[Cluster]:
    if not block:
        return None
    return Cluster(redis=block["redis"], prefix=block["prefix"], node=block.get("node"),
                   lease=seconds(block["lease"]), timeout=seconds(block["timeout"]))


def _server(s: Mapping[str, Any], sim: Optional[Mapping[str, Any]], top_oauth: Mapping[str, Any],
            settings: Mapping[str, Any]) -> Server:
    users = [User(uid=u["uid"], username=u["username"], status=u["status"], role_color=color(u["roleColor"]))
             for u in s["users"]]
    simulation = None
    if sim is not None:
        generated: list[User] = []
        if sim.get("generate"):
            generated = [User(uid, name, status, colour) for uid, name, status, colour in
                         generated_users(sim["generate"], sim.get("seed"), s["snowflake"], (u.uid for u in users))]
        users += generated
        simulation = build_simulation(sim, generated=len(generated))
    source = s.get("source", "config")
    section = sections().get(source)
    return Server(
        snowflake=s["snowflake"],
        id=s["id"],
        name=s.get("name") or s["id"],
        default=s["default"],
        passworded=s["passworded"],
        password=s.get("password"),
        users=tuple(users),
        oauth=_oauth(effective_oauth(top_oauth, s)),
        access=AccessRules(
            users=tuple(s["access"]["users"]),
            guild_members=s["access"]["guild_members"],
            roles=tuple(s["access"]["roles"]),
            any_discord_user=s["access"]["any_discord_user"],
        ),
        simulation=simulation,
        source=source,
        options=section.options(s, settings.get(source)) if section is not None else None,
        named="name" in s,
    )


def _transitions(table: Mapping[str, Mapping[str, float]]) -> tuple[tuple[str, Choice], ...]:
    # A row whose weights are all 0 stays (empty): it keeps the status, even over an inherited row.
    return tuple((status, Choice.of(table[status], STATUSES)) for status in STATUSES if status in table)


def _rate(block: Mapping[str, Any], key: str = "interval") -> Rate:
    return Rate(interval=seconds(block[key]), timing=block["timing"], per=block.get("per", "server"))


def build_simulation(sim: Mapping[str, Any], generated: int = 0) -> Simulation:
    """Merged, default-filled simulation data (already checked) → the frozen rules."""
    p, m = sim["presence"], sim["messages"]
    channels = m["channels"]
    activity = sim.get("activity")
    churn = sim.get("churn")
    return Simulation(
        seed=sim.get("seed"),
        presence=PresenceRules(
            rate=_rate(p),
            transitions=_transitions(p["transitions"]),
            users=tuple(UserPresence(uid, float(o.get("weight", 1)), _transitions(o.get("transitions", {})))
                        for uid, o in p["users"].items()),
        ),
        messages=MessageRules(
            rate=_rate(m),
            corpus=tuple(m["corpus"]),
            channels=Choice.of(channels) if isinstance(channels, Mapping) else Choice(tuple(channels), (1.0,) * len(channels)),
            statuses=tuple(s for s in STATUSES if s in m["statuses"]),
            chattiness=tuple((uid, float(w)) for uid, w in m["chattiness"].items()),
        ),
        activity=None if activity is None else Activity(
            timezone=activity["timezone"],
            points=tuple(sorted((time_of_day(k), float(v)) for k, v in activity["hours"].items())),  # type: ignore[misc]
        ),
        churn=None if churn is None else Churn(
            arrivals=Rate(seconds(churn["arrivals"]), churn["timing"]),
            departures=Rate(seconds(churn["departures"]), churn["timing"]),
            max=churn["max"],
            status=churn["status"],
            names=churn["names"] if isinstance(churn["names"], str) else tuple(churn["names"]),
            colors=tuple(color(c) for c in churn["colors"]),
        ),
        generated=generated,
    )


def normalise_prefix(path: str) -> str:
    stripped = "/" + path.strip("/")
    return stripped if stripped != "//" else "/"
