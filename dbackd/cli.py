"""The `dbackd` command line: run the daemon, check a config, simulate it, print the schema,
and drive a running daemon through its HTTP API (`say`, `presence`).

Parses arguments, prints for people, and hands work to the daemon and the loader.
Exit codes: 0 fine, 1 a check found problems (or the daemon failed, or refused an API
request), 2 a config that cannot be used at start-up (or no API token to send).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Optional, Sequence

from . import __version__, logs
from .config import EMBEDDED_NAME, Config, ConfigError, Server, load_embedded, load_file, schema_text, with_overrides

if TYPE_CHECKING:
    from .daemon import Daemon

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_CONFIG = 0, 1, 2


def _config_option(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("-c", "--config", metavar="FILE", default=default,
                   help="the YAML config (default: the embedded demo, examples/dback.yaml)")


def _run_options(p: argparse.ArgumentParser, default: object) -> None:
    _config_option(p, default)
    p.add_argument("--host", default=default, help="address to listen on (overrides listen.host)")
    p.add_argument("--port", type=int, default=default, help="port to listen on (overrides listen.port)")
    p.add_argument("--static-dir", default=default, metavar="DIR",
                   help="serve this directory at / (overrides static)")
    p.add_argument("--no-watch", action="store_true", default=default,
                   help="do not follow edits of the config file (reload with SIGHUP only)")
    p.add_argument("--log-level", choices=list(logs.LEVELS), default=default, help="overrides logging.level")
    p.add_argument("--log-format", choices=["auto", "console", "json"], default=default,
                   help="overrides logging.format (auto: readable on a terminal, JSON otherwise)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbackd", description="A config-driven backend for the d-zone frontend.",
        epilog="With no command, dbackd runs the daemon ('dbackd run').",
    )
    parser.add_argument("--version", action="version", version=f"dbackd {__version__}")
    _run_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # SUPPRESS keeps a sub-command from overwriting options given before it.
    run = sub.add_parser("run", help="run the daemon (the default)")
    _run_options(run, argparse.SUPPRESS)
    check = sub.add_parser("check", help="validate a config and summarise it; exit 0 if usable, 1 if not")
    _config_option(check, argparse.SUPPRESS)
    check.add_argument("--diff", metavar="RUNNING",
                       help="instead of a summary, show what a reload from RUNNING to this file would change")
    tail = sub.add_parser("tail", help="join a server on a running daemon and print every frame it sends")
    tail.add_argument("--url", default="ws://127.0.0.1:3000/ws", help="the daemon's socket (default: %(default)s)")
    tail.add_argument("--server", default="default", help="server to join (default: %(default)s)")
    tail.add_argument("--password", default=None, help="legacy password for a private server")
    sim = sub.add_parser("simulate", help="print a config's simulated events as JSON lines, fast-forwarded, without opening a port")
    _config_option(sim, argparse.SUPPRESS)
    sim.add_argument("--seconds", type=_positive, default=600.0, metavar="N", help="how much time to simulate (default 600)")
    sim.add_argument("--seed", type=_seed, default=None, help="seed for every server (default: each server's own, else random)")
    sim.add_argument("--server", metavar="ID", help="only this server (short id or snowflake)")
    sim.add_argument("--start", type=_instant, default=None, metavar="TIME",
                     help="wall-clock start for the activity curve, ISO 8601 (default: now; UTC if no offset)")
    sim.add_argument("--summary-only", action="store_true", help="print only the summary")
    say = sub.add_parser("say", help="make a user say something, through a running daemon's HTTP API")
    _api_options(say)
    say.add_argument("server", metavar="SERVER", help="server: short id, snowflake or default")
    say.add_argument("uid", metavar="UID", help="the speaking user's Discord id")
    say.add_argument("text", metavar="TEXT", help="what the user says")
    say.add_argument("--channel", default="0", metavar="ID",
                     help="channel id; messages in one channel queue up (default: %(default)s)")
    presence = sub.add_parser("presence", help="set a user's status through a running daemon's HTTP API")
    _api_options(presence)
    presence.add_argument("server", metavar="SERVER", help="server: short id, snowflake or default")
    presence.add_argument("uid", metavar="UID", help="the user's Discord id")
    presence.add_argument("status", metavar="STATUS", help="online, idle, dnd or offline")
    presence.add_argument("--username", help="name shown over the actor (needed to add a user)")
    presence.add_argument("--color", metavar="#RRGGBB", help="the actor's colour")
    presence.add_argument("--delete", action="store_true", help="remove the (runtime) user")
    schema_cmd = sub.add_parser("schema", help="print the config's JSON Schema")
    schema_cmd.add_argument("--markdown", action="store_true", help="print the config reference as Markdown instead")
    return parser


def _api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:3000", help="the daemon (default: %(default)s)")
    p.add_argument("--token-file", metavar="FILE",
                   help="read the API token from FILE (default: the DBACKD_API_TOKEN environment variable)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    if command in ("say", "presence"):
        return api_command(args)
    if command == "schema":
        if args.markdown:
            from .config.reference import reference

            sys.stdout.write(reference())
        else:
            sys.stdout.write(schema_text())
        return EXIT_OK
    if command == "tail":
        try:
            return asyncio.run(tail_frames(args.url, args.server, args.password))
        except KeyboardInterrupt:
            return EXIT_OK
    if command == "check":
        return check(args.config, getattr(args, "diff", None))
    if command == "simulate":
        return simulate(args)
    return run(args)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _seed(text: str) -> object:
    return int(text) if text.lstrip("-").isdigit() else text


def _instant(text: str) -> float:
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError("must be a time like 2026-01-01T18:00 or 2026-01-01T18:00+01:00") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _load(path: Optional[str]) -> Config:
    return load_file(path) if path else load_embedded()


def _print_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    n = len(exc.problems)
    print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)


def check(path: Optional[str], running: Optional[str] = None) -> int:
    try:
        config = _load(path)
        before = load_file(running) if running else None
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_PROBLEMS
    if before is not None:
        from .config.diff import describe, diff

        print("\n".join(describe(diff(before, config), before, config)))
    else:
        print(summary(config))
    return EXIT_OK


def summary(config: Config) -> str:
    lines = [f"{config.file or EMBEDDED_NAME}: OK",
             f"listen   {config.listen.host}:{config.listen.port}"]
    for m in config.static:
        lines.append(f"static   {m.path} -> {m.dir or 'built-in page'} (socket also at {m.ws_path})")
    api = config.api
    lines.append(f"api      on at /api/, {len(api.tokens)} token{'s' if len(api.tokens) != 1 else ''}, "
                 f"{api.rate.per_second:g} requests/s (burst {api.rate.burst}) each" if api.enabled else "api      off")
    lines.append(f"servers  {len(config.servers)}")
    width_id = max(len(s.id) for s in config.servers)
    width_name = max(len(s.name) for s in config.servers)
    for s in config.servers:
        n = len(s.users)
        flags = []
        if s.default:
            flags.append("default")
        if s.passworded:
            flags.append(_private_summary(s))
        lines.append(f"  {s.id:<{width_id}}  {s.name:<{width_name}}  {s.snowflake:>20}  "
                     f"{n:>4} user{'s' if n != 1 else ' '}  {'  '.join(flags)}".rstrip())
    lines += [f"note: {note}" for note in config.notes]
    return "\n".join(lines)


async def tail_frames(url: str, server: str, password: Optional[str]) -> int:
    """Print the frames a daemon sends to one joined client, one JSON line each."""
    import aiohttp

    request: dict = {"server": server}
    if password:
        request["password"] = password
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5)) as ws:
                await ws.send_json({"type": "connect", "data": request})
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        print(msg.data, flush=True)
    except (aiohttp.ClientError, OSError) as exc:
        print(f"dbackd tail: cannot reach {url}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _private_summary(s: Server) -> str:
    """Who may enter a passworded server, in a few words."""
    parts = ["private"]
    if s.password:
        parts.append("legacy password")
    rules = s.access
    if rules.any:
        who = []
        if rules.any_discord_user:
            who.append("any Discord user")
        if rules.users:
            who.append(f"{len(rules.users)} listed user{'s' if len(rules.users) != 1 else ''}")
        if rules.guild_members:
            who.append("guild members")
        if rules.roles:
            who.append(f"{len(rules.roles)} role{'s' if len(rules.roles) != 1 else ''}")
        parts.append("login: " + " or ".join(who) + (" (mock)" if s.oauth.provider == "mock" else ""))
    return ", ".join(parts)


def simulate(args: argparse.Namespace) -> int:
    """Run the config's simulation in virtual time; events to stdout, the summary to stderr."""
    import json
    import time
    from datetime import datetime, timezone

    from . import protocol
    from .simulation import Engine
    from .simulation.report import Tally
    from .world import World

    try:
        config = _load(args.config)
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_PROBLEMS
    only = None
    if args.server is not None:
        server = config.server(args.server)
        if server is None:
            print(f"no server {args.server!r} in {config.file or EMBEDDED_NAME} "
                  f"(servers: {', '.join(s.id for s in config.servers)})", file=sys.stderr)
            return EXIT_PROBLEMS
        only = {server.snowflake}
    logs.configure("warning", "console", sys.stderr)  # stdout carries only events
    start = args.start if args.start is not None else time.time()
    world = World(config)
    engine = Engine(world, seed=args.seed, epoch=start, servers=only)
    tally = Tally(world, lambda: engine.now)
    out = sys.stdout
    closed = False

    def emit(event: object) -> None:
        nonlocal closed
        message = protocol.for_event(event)
        if message is not None and not closed:
            try:
                out.write(json.dumps({"t": round(engine.now, 3), **message}, ensure_ascii=False) + "\n")
            except BrokenPipeError:  # `dbackd simulate | head`: the reader has seen enough
                closed = True

    if not args.summary_only:
        world.subscribe(emit)
    # Advance in slices so a closed pipe ends the run early; the stream is the same either way.
    now = 0.0
    while now < args.seconds and not closed:
        now = min(args.seconds, now + 60.0)
        engine.advance_to(now)
    try:
        out.flush()
    except BrokenPipeError:
        closed = True
    if closed:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # keep Python quiet at exit
        return EXIT_OK
    began = datetime.fromtimestamp(start, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    seeds = {sf: runner.seed for sf, runner in engine.runners.items()}
    print(f"-- summary: {args.seconds:g} s simulated from {began}", file=sys.stderr)
    print(tally.summary(args.seconds, seeds, only), file=sys.stderr)
    if args.seed is None and any(seed == engine.random_seed for seed in seeds.values()):
        print(f"-- servers without a seed used {engine.random_seed}: --seed {engine.random_seed} repeats this run",
              file=sys.stderr)
    return EXIT_OK


def _token(args: argparse.Namespace) -> Optional[str]:
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            return f.read().strip() or None
    return os.environ.get("DBACKD_API_TOKEN") or None


def api_command(args: argparse.Namespace) -> int:
    """`say` and `presence`: one request to the HTTP API; the daemon's error is printed as it is."""
    prog = f"dbackd {args.command}"
    try:
        token = _token(args)
    except OSError as exc:
        print(f"{prog}: cannot read the token file: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if token is None:
        print(f"{prog}: no API token: set DBACKD_API_TOKEN or give --token-file", file=sys.stderr)
        return EXIT_BAD_CONFIG
    base = args.url.rstrip("/")
    if args.command == "say":
        path, body = "messages", {"uid": args.uid, "message": args.text, "channel": args.channel}
    else:
        path, body = "presence", {"uid": args.uid, "status": args.status}
        if args.username:
            body["username"] = args.username
        if args.color:
            body["roleColor"] = args.color
        if args.delete:
            body["delete"] = True
    from urllib.parse import quote

    url = f"{base}/api/servers/{quote(args.server, safe='')}/{path}"
    return asyncio.run(_post(prog, url, token, body))


async def _post(prog: str, url: str, token: str, body: dict) -> int:
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
                text = await r.text()
                if r.status < 300:
                    return EXIT_OK
                try:
                    reason = json.loads(text)["error"]
                except (ValueError, KeyError, TypeError):
                    reason = text.strip() or r.reason
                print(f"{prog}: {r.status}: {reason}", file=sys.stderr)
                return EXIT_PROBLEMS
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        print(f"{prog}: cannot reach {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_PROBLEMS


def run(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    try:
        config = with_overrides(_load(args.config), host=args.host, port=args.port, static_dir=args.static_dir)
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_BAD_CONFIG
    logs.configure(args.log_level or config.logging.level, args.log_format or config.logging.format)
    daemon = Daemon(config, host=args.host, port=args.port, static_dir=args.static_dir, watch=not args.no_watch)
    try:
        return asyncio.run(_serve(daemon))
    except KeyboardInterrupt:
        return EXIT_OK


async def _serve(daemon: "Daemon") -> int:
    import structlog

    from .notify import NotifyService

    log = structlog.get_logger("dbackd")
    config = daemon.config
    # The process, not an embedded Daemon, is what systemd supervises: only here do we notify.
    daemon.services.append(NotifyService(daemon))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.reloader.request)
    try:
        await daemon.start()
    except OSError as exc:
        log.error("daemon.listen_failed", host=config.listen.host, port=config.listen.port, error=str(exc))
        return EXIT_PROBLEMS
    try:
        await stop.wait()
    finally:
        await daemon.stop()
        await _cancel_leftovers(log)
    return EXIT_OK


async def _cancel_leftovers(log, timeout: float = 2.0) -> None:
    """Cancel any task still running after the daemon stopped, waiting a bounded time.

    asyncio.run would cancel them too, but would wait forever for one that ignores it.
    """
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    log.warning("daemon.cancelled_tasks", cancelled=len(tasks), stuck=len(pending))
