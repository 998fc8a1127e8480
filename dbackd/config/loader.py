"""Config file → immutable model: YAML, environment, schema, then the rules a schema cannot say.

Every problem is collected and raised at once as a ConfigError, each with its file,
line and column. The loader never touches the running daemon: applying a model is
the world's job.
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

from . import schema as _schema
from .errors import ConfigError, Problem
from .model import Config, Mount, build, normalise_prefix
from .source import Source, parse

EMBEDDED_NAME = "<embedded default>"
MIN_TOKEN_LENGTH = 16  # the schema's `token` pattern says the same
MIN_TOKEN_SYMBOLS = 5  # 16 random hex digits have fewer only about once in a million


def load_file(path: str | os.PathLike, env: Optional[Mapping[str, str]] = None) -> Config:
    """Read and check a config file. Raises ConfigError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(p), 1, 1, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(p), 1, 1, "", f"cannot read the file: {exc}")]) from None
    return load_text(text, str(p), p.resolve().parent, env)


def embedded_text() -> str:
    """The embedded default config: byte for byte examples/dback.yaml."""
    return resources.files("dbackd").joinpath("data/dback.yaml").read_text(encoding="utf-8")


def load_embedded(env: Optional[Mapping[str, str]] = None) -> Config:
    return load_text(embedded_text(), EMBEDDED_NAME, Path.cwd(), env)


def load_text(text: str, file: str, base_dir: Path, env: Optional[Mapping[str, str]] = None) -> Config:
    source, problems = parse(text, file, os.environ if env is None else env)
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
    problems += _schema.validate(source)
    rule_problems, notes = _check_rules(source, base_dir)
    problems += rule_problems
    if problems:
        raise ConfigError(problems)
    file = None if source.file == "<dict>" else source.file
    return build(source.data, base_dir, file, tuple(notes))


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
        if s.get("passworded") is True and not s.get("password"):
            notes.append(f"server {s.get('id')}: passworded, and no password or access rule lets anyone in")
    defaults = [i for i, s in enumerate(servers) if s.get("default") is True]
    for i in defaults[1:]:
        line, _ = source.position(("servers", defaults[0], "default"))
        problems.append(source.problem(("servers", i, "default"), f"only one server may be the default (already servers[{defaults[0]}], line {line})"))
    if not defaults:
        notes.append('no server is marked default: clients asking for "default" get an error')

    api = data.get("api") if isinstance(data.get("api"), dict) else {}
    for i, token in enumerate(_list(api.get("tokens"))):
        # The schema checks length and characters; a long run of few symbols is still guessable.
        # Never quote the token itself in a message.
        if isinstance(token, str) and len(token) >= MIN_TOKEN_LENGTH and len(set(token)) < MIN_TOKEN_SYMBOLS:
            problems.append(source.problem(("api", "tokens", i), f"too weak: only {len(set(token))} different characters "
                                           "(make one with `openssl rand -hex 24` and give it with ${VAR})"))
        elif isinstance(token, str) and source.file != "<dict>" and ("api", "tokens", i) not in source.from_env:
            notes.append(f"api.tokens[{i}] is written in the file: give it with ${{VAR}} to keep it out of the file")

    duplicates([(normalise_prefix(m["path"]), ("static", i, "path")) for i, m in enumerate(mounts)
                if isinstance(m.get("path"), str)], "mount path")
    for i, m in enumerate(mounts):
        if isinstance(m.get("path"), str) and (normalise_prefix(m["path"]) + "/").startswith("/api/"):
            problems.append(source.problem(("static", i, "path"), "/api/ is the HTTP API's: serve files elsewhere"))
        if isinstance(m.get("dir"), str):
            d = (base_dir / m["dir"]).resolve()
            if not d.is_dir():
                problems.append(source.problem(("static", i, "dir"), f"not a directory: {d}"))
    return problems, notes


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
        static = (Mount(path="/", dir=d),)
    return dataclasses.replace(config, listen=listen, static=static)
