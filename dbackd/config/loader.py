"""Config file → immutable model: YAML, environment, schema, then the rules a schema cannot say.

Every problem is collected and raised at once as a ConfigError, each with its file,
line and column. The loader never touches the running daemon: applying a model is
the world's job.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import ssl
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

from dbackd.config import schema as _schema
from dbackd.config import simulation as _simulation
from dbackd.config.environment import Environment
from dbackd.config.errors import ConfigError, Problem
from dbackd.config.paths import Unreadable, check_file, located, read_text
from dbackd.config.checks import check_secret, is_loopback
from dbackd.config.model import Config, Mount, build, effective_oauth, normalise_prefix
from dbackd.config.sections import sections
from dbackd.config.source import Source, parse
from dbackd.config.values import seconds

EMBEDDED_NAME = "<embedded default>"
MIN_TOKEN_LENGTH = 16  # the schema's `token` pattern says the same
MIN_TOKEN_SYMBOLS = 5  # 16 random hex digits have fewer only about once in a million


def load_file(path: str | os.PathLike, env: Optional[Mapping[str, str]] = None) -> Config:
    """Read and check a config file. Raises ConfigError listing every problem."""
    p = Path(path)
    try:
        text = read_text(p)
    except FileNotFoundError:
        raise ConfigError([Problem(str(p), 1, 1, "", "no such file")]) from None
    except Unreadable as exc:
        raise ConfigError([Problem(str(p), 1, 1, "", str(exc))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(p), 1, 1, "", f"cannot read the file: {exc}")]) from None
    return load_text(text, str(p), located(Path.cwd(), p).parent, env)


def embedded_text() -> str:
    """The embedded default config: byte for byte examples/dback.yaml."""
    return resources.files("dbackd").joinpath("data/dback.yaml").read_text(encoding="utf-8")


def load_embedded(env: Optional[Mapping[str, str]] = None) -> Config:
    return load_text(embedded_text(), EMBEDDED_NAME, Path.cwd(), env)


def load_text(text: str, file: str, base_dir: Path, env: Optional[Mapping[str, str]] = None) -> Config:
    source, problems = parse(text, file, Environment() if env is None else env)
    if source.data is None:
        raise ConfigError(problems)
    return _finish(source, base_dir, problems)


def load_data(data: Mapping[str, Any], base_dir: Optional[Path] = None) -> Config:
    """Check a config given as plain Python data (for embedding); no positions to report."""
    import copy

    source = Source(file="<dict>", data=copy.deepcopy(dict(data)))
    return _finish(source, base_dir or Path.cwd())


def _finish(source: Source, base_dir: Path, problems: Optional[list[Problem]] = None) -> Config:
    """Schema and rules; every problem of every stage is reported together."""
    problems = list(problems or [])
    if not isinstance(source.data, dict):
        raise ConfigError(problems + [source.problem((), "the document must be a mapping of keys (listen, servers, ...)")])
    layers = _simulation.snapshot(source.data)  # as written: the schema is about to fill defaults in
    problems += _schema.validate(source)
    rule_problems, notes = _check_rules(source, base_dir)
    problems += rule_problems
    sim_problems, sim_notes, simulations = _simulation.resolve(source, base_dir, layers, ok=not problems)
    problems += sim_problems
    if problems:
        raise ConfigError(problems)
    file = None if source.file == "<dict>" else source.file
    config = build(source.data, base_dir, file, tuple(notes + sim_notes), simulations)
    return dataclasses.replace(config, includes=tuple(sorted(source.included)))


def _check_rules(source: Source, base_dir: Path) -> tuple[list[Problem], list[str]]:
    """Rules across values, which JSON Schema cannot express.

    Runs even when the schema found problems, so it reads defensively.
    """
    data = source.data
    problems: list[Problem] = []
    notes: list[str] = []
    servers = [s if isinstance(s, dict) else {} for s in _list(data.get("servers"))]
    mounts = [m if isinstance(m, dict) else {} for m in _list(data.get("static"))]

    def duplicates(values: list[tuple[Any, tuple]], what: str) -> None:
        values = [(v, p) for v, p in values if isinstance(v, (str, int))]
        counts = Counter(v for v, _ in values)
        first: dict[Any, tuple] = {}
        for value, path in values:
            if counts[value] > 1:
                if value in first:
                    line, _ = source.position(first[value])
                    problems.append(source.problem(path, f"duplicate {what} {value!r} (first used at line {line})"))
                else:
                    first[value] = path

    duplicates([(s.get("snowflake"), ("servers", i, "snowflake")) for i, s in enumerate(servers)], "server snowflake")
    duplicates([(s.get("id"), ("servers", i, "id")) for i, s in enumerate(servers)], "server id")
    for i, s in enumerate(servers):
        if s.get("id") == "default":
            problems.append(source.problem(("servers", i, "id"), '"default" is reserved: it names the server marked default'))
        users = [u if isinstance(u, dict) else {} for u in _list(s.get("users"))]
        duplicates([(u.get("uid"), ("servers", i, "users", j, "uid")) for j, u in enumerate(users)], "user uid")
        if s.get("password") and s.get("passworded") is False:
            notes.append(f"server {s.get('id')}: `password` is ignored because `passworded` is false")
        _check_access(source, data, i, s, problems, notes)
    defaults = [i for i, s in enumerate(servers) if s.get("default") is True]
    for i in defaults[1:]:
        line, _ = source.position(("servers", defaults[0], "default"))
        problems.append(source.problem(("servers", i, "default"), f"only one server may be the default (already servers[{defaults[0]}], line {line})"))
    if not defaults:
        notes.append('no server is marked default: clients asking for "default" get the first server that is not '
                     'passworded (the d-zone frontend asks for it again after every error until it has a world)')

    _check_oauth_blocks(source, data, servers, problems)
    _check_sections(source, data, servers, problems, notes)
    _check_cluster(source, data, problems)
    api = data.get("api") if isinstance(data.get("api"), dict) else {}
    for i, token in enumerate(_list(api.get("tokens"))):
        # The schema checks length and characters; a long run of few symbols is still guessable.
        # Never quote the token itself in a message.
        if isinstance(token, str) and len(token) >= MIN_TOKEN_LENGTH and len(set(token)) < MIN_TOKEN_SYMBOLS:
            problems.append(source.problem(("api", "tokens", i), f"too weak: only {len(set(token))} different characters "
                                           "(make one with `openssl rand -hex 24` and give it with ${VAR})"))
        elif isinstance(token, str) and source.file != "<dict>" and ("api", "tokens", i) not in source.from_env:
            notes.append(f"api.tokens[{i}] is written in the file: give it with ${{VAR}} to keep it out of the file")

    _check_listen(source, data, base_dir, problems)
    _check_limits(source, data, problems)
    duplicates([(normalise_prefix(m["path"]), ("static", i, "path")) for i, m in enumerate(mounts)
                if isinstance(m.get("path"), str)], "mount path")
    for i, m in enumerate(mounts):
        if isinstance(m.get("path"), str) and (normalise_prefix(m["path"]) + "/").startswith("/api/"):
            problems.append(source.problem(("static", i, "path"), "/api/ is the HTTP API's: serve files elsewhere"))
        if isinstance(m.get("dir"), str):
            d = (base_dir / m["dir"]).resolve()
            if not d.is_dir():
                problems.append(source.problem(("static", i, "dir"), f"not a directory: {d}"))
            else:
                why = unsafe_mount(d, _private_files(source, data, base_dir))
                if why:
                    problems.append(source.problem(("static", i, "dir"), why))
            for key in ("sockets", "frame_ancestors"):
                if m.get(key):
                    problems.append(source.problem(("static", i, key),
                                                   f"only the built-in page reads `{key}`: a directory's page sets its own"))
    return problems, notes


def unsafe_mount(directory: Path, private: list[tuple[str, Path]]) -> Optional[str]:
    """Why a directory must not be served (the root, or it holds a private file), or None.

    `directory` is resolved; so is what a mount serves, as a symlink inside it is followed."""
    if directory == Path(directory.anchor):
        return f"the root directory {directory} must not be served: give the directory of the files to serve"
    for what, file in private:
        target = file.resolve()
        if directory in target.parents:
            return f"{directory} holds {what} {target}: it would be served; serve a directory of its own"
    return None


def _private_files(source: Source, data: dict, base_dir: Path) -> list[tuple[str, Path]]:
    """Files a static mount must never serve: the config itself and the TLS key."""
    private = []
    if source.file not in ("<dict>", EMBEDDED_NAME) and Path(source.file).is_file():
        private.append(("the config file", Path(source.file)))
    listen = data.get("listen") if isinstance(data.get("listen"), dict) else {}
    tls = listen.get("tls") if isinstance(listen.get("tls"), dict) else {}
    if isinstance(tls.get("key"), str):
        private.append(("the TLS key", located(base_dir, tls["key"])))
    return private


def _check_listen(source: Source, data: dict, base_dir: Path, problems: list[Problem]) -> None:
    """Trusted proxies and operators are addresses or networks; the TLS files exist and make a usable pair."""
    listen = data.get("listen") if isinstance(data.get("listen"), dict) else {}
    for key in ("trusted_proxies", "operators"):
        for i, network in enumerate(_list(listen.get(key))):
            if isinstance(network, str):
                try:
                    ipaddress.ip_network(network.strip(), strict=False)
                except ValueError:
                    problems.append(source.problem(("listen", key, i), f"not an IP address or network: {network!r}"))
    tls = listen.get("tls")
    if not isinstance(tls, dict) or not isinstance(tls.get("cert"), str) or not isinstance(tls.get("key"), str):
        return
    cert, key = located(base_dir, tls["cert"]), located(base_dir, tls["key"])
    source.included.update((cert, key))  # a reload follows them: a renewed certificate is picked up
    try:
        for which, file in (("cert", cert), ("key", key)):
            try:
                check_file(file)  # OpenSSL would wait on a FIFO for good
            except Unreadable as exc:
                problems.append(source.problem(("listen", "tls", which), f"{file}: {exc}"))
                return
        tls_context(cert, key)
    except FileNotFoundError as exc:
        which = "key" if Path(exc.filename or "") == key else "cert"
        problems.append(source.problem(("listen", "tls", which), f"no such file: {exc.filename}"))
    except (OSError, ssl.SSLError) as exc:
        # OpenSSL's reason names neither the key nor its contents.
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        problems.append(source.problem(("listen", "tls"), f"cannot use the certificate and key: {reason}"))


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context with the given chain and key. Blocking (reads files)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


_POSITIVE = ("handshake_timeout", "header_timeout", "body_timeout")


def _check_limits(source: Source, data: dict, problems: list[Problem]) -> None:
    limits = data.get("limits") if isinstance(data.get("limits"), dict) else {}
    for key in _POSITIVE:
        try:
            if key in limits and seconds(limits[key]) <= 0:
                problems.append(source.problem(("limits", key), "must be more than 0"))
        except ValueError:
            pass  # the schema reports a malformed duration


# Secret keys of an oauth block and the variable the error message suggests for each.
_SECRETS = {"client_secret": "DISCORD_CLIENT_SECRET", "bot_token": "DISCORD_BOT_TOKEN"}


def _check_oauth_blocks(source: Source, data: dict, servers: list[dict], problems: list[Problem]) -> None:
    """Each oauth block on its own: secrets only from the environment, a timeout above 0."""
    blocks = [(("oauth",), data.get("oauth"))]
    blocks += [(("servers", i, "oauth"), s.get("oauth")) for i, s in enumerate(servers)]
    for base, block in blocks:
        if not isinstance(block, dict):
            continue
        for key, var in _SECRETS.items():
            check_secret(source, base + (key,), block.get(key), var, problems)
        timeout = block.get("timeout")
        try:
            if timeout is not None and seconds(timeout) <= 0:
                problems.append(source.problem(base + ("timeout",), "must be more than 0"))
        except ValueError:
            pass  # the schema reports a malformed duration


def _check_cluster(source: Source, data: dict, problems: list[Problem]) -> None:
    cluster = data.get("cluster") if isinstance(data.get("cluster"), dict) else None
    workers = data.get("workers")
    if isinstance(workers, int) and workers > 1 and cluster is None:
        problems.append(source.problem(("workers",), "several workers share the world through Redis: "
                                                     "add a `cluster` block with `redis: ${REDIS_URL}`"))
    url = cluster.get("redis") if cluster else None
    if isinstance(url, str) and source.file != "<dict>" and ("cluster", "redis") not in source.from_env:
        scheme, _, rest = url.partition("://")
        if "@" in rest.split("/", 1)[0] and ":" in rest.split("@", 1)[0]:
            problems.append(source.problem(("cluster", "redis"), "a Redis password must not be written in the file: "
                                                                 "write `redis: ${REDIS_URL}` and set REDIS_URL"))


def _check_sections(source: Source, data: dict, servers: list[dict], problems: list[Problem], notes: list[str]) -> None:
    """Each source's section (config/sections.py): its per-server keys on other servers, then its own rules."""
    for key, section in sections().items():
        for s in servers:
            given = [k for k in section.server_keys if k in s]
            if s.get("source") != key and given:
                notes.append(f"server {s.get('id')}: {', '.join(given)} apply only to `source: {key}` servers")
        section.check(source, data, servers, problems, notes)


def _check_access(source: Source, data: dict, i: int, s: dict, problems: list[Problem], notes: list[str]) -> None:
    """A server's access rules against its effective oauth settings."""
    name = f"server {s.get('id')}"
    access = s.get("access") if isinstance(s.get("access"), dict) else {}
    oauth = effective_oauth(data.get("oauth"), s)
    provider = oauth.get("provider", "discord")
    member_rules = [k for k in ("guild_members", "roles") if access.get(k) not in (None, False, [])]
    has_rule = bool(member_rules) or bool(access.get("users")) or access.get("any_discord_user") is True
    for key in member_rules:
        path = ("servers", i, "access", key)
        if provider == "mock":
            problems.append(source.problem(path, "the mock provider cannot check guild membership: "
                                                 "use `users` or `any_discord_user`, or provider discord"))
        elif "bot_token" not in oauth:  # (present but empty: the env or schema stage says why)
            problems.append(source.problem(path, "needs a bot token to look up guild members: set "
                                                 "`oauth.bot_token: ${DISCORD_BOT_TOKEN}` (top level or this server's oauth)"))
    if s.get("passworded") is not True:
        if has_rule:
            notes.append(f"{name}: `access` is ignored because `passworded` is false")
        return
    if not has_rule:
        if s.get("password"):
            notes.append(f"{name}: no access rule, so nobody gets in by Discord login (only with the legacy password)")
        else:
            notes.append(f"{name}: passworded, and no password or access rule lets anyone in")
        return
    if provider == "mock":
        tokens = oauth.get("tokens")
        if isinstance(tokens, dict) and tokens:
            notes.append(f"{name}: uses the mock OAuth provider: only the tokens written in the config log in "
                         f"(for demos, never for real use)")
        else:
            notes.append(f"{name}: uses the mock OAuth provider without `tokens`, so nobody gets in by login")
        return
    if not oauth.get("client_id"):
        notes.append(f"{name}: no `oauth.client_id`, so clients are not told which Discord application to log in with")
    api_base = oauth.get("api_base")
    if isinstance(api_base, str) and api_base.startswith("http://") and not is_loopback(api_base):
        notes.append(f"{name}: `oauth.api_base` is not https, so login tokens would cross the network in clear")


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def with_overrides(config: Config, host: Optional[str] = None, port: Optional[int] = None,
                   static_dir: Optional[str] = None) -> Config:
    """Apply command-line overrides (--host, --port, --static-dir) to a loaded config."""
    listen = dataclasses.replace(
        config.listen,
        **{k: v for k, v in (("host", host), ("port", port)) if v is not None},
    )
    static = config.static
    if static_dir is not None:
        d = Path(static_dir).resolve()
        if not d.is_dir():
            raise ConfigError([Problem("--static-dir", 1, 1, "", f"not a directory: {d}")])
        private = [("the config file", Path(config.file))] if config.file and Path(config.file).is_file() else []
        if config.listen.tls is not None:
            private.append(("the TLS key", config.listen.tls.key))
        why = unsafe_mount(d, private)
        if why:
            raise ConfigError([Problem("--static-dir", 1, 1, "", why)])
        static = (Mount(path="/", dir=d),)
    return dataclasses.replace(config, listen=listen, static=static)
