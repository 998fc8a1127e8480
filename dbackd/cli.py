"""The `dbackd` command line: the parser, and dispatch to the part that does each command.

Run the daemon (process.py), check a config (config/summary.py), simulate it
(simulation/offline.py), print the schema, and the network clients (clients.py).
Exit codes: 0 fine, 1 a check found problems (or the daemon failed, or refused an API
request), 2 a config that cannot be used at start-up (or no API token to send).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from dbackd.version import __version__
from dbackd.config import (EMBEDDED_NAME, Config, ConfigError, load_embedded, load_file, schema, schema_text,
                           with_overrides)

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
    p.add_argument("--workers", type=int, default=default, metavar="N",
                   help="serve with N processes sharing the port and the cluster's Redis (overrides workers)")
    p.add_argument("--worker-index", type=int, default=default, help=argparse.SUPPRESS)  # set by the parent
    p.add_argument("--no-watch", action="store_true", default=default,
                   help="do not follow edits of the config file (reload with SIGHUP only)")
    logging = schema()["properties"]["logging"]["properties"]
    p.add_argument("--log-level", choices=logging["level"]["enum"], default=default, help="overrides logging.level")
    p.add_argument("--log-format", choices=logging["format"]["enum"], default=default,
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
    # asyncio and the rest are loaded by the command that needs them: `run` binds its port first.
    if command in ("say", "presence"):
        import asyncio

        from dbackd.clients import api_command

        return asyncio.run(api_command(args))
    if command == "schema":
        if args.markdown:
            from dbackd.config.reference import reference

            sys.stdout.write(reference())
        else:
            sys.stdout.write(schema_text())
        return EXIT_OK
    if command == "tail":
        import asyncio

        from dbackd.clients import tail_frames

        try:
            return asyncio.run(tail_frames(args.url, args.server, args.password))
        except KeyboardInterrupt:
            return EXIT_OK
    if command == "check":
        return check(args.config, getattr(args, "diff", None))
    if command == "simulate":
        return simulate(args)
    return run(args, argv if argv is not None else sys.argv[1:])


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
        from dbackd.config.diff import describe, diff

        print("\n".join(describe(diff(before, config), before, config)))
    else:
        from dbackd.config.summary import summary

        print(summary(config))
    return EXIT_OK


def simulate(args: argparse.Namespace) -> int:
    """Run the config's simulation in virtual time; events to stdout, the summary to stderr."""
    import time

    from dbackd.fanout.protocol import for_event
    from dbackd.sources.simulation.offline import Run

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
    from dbackd.ops import logs

    logs.configure("warning", "console", sys.stderr)  # stdout carries only events
    run = Run(config, seconds=args.seconds, start=args.start if args.start is not None else time.time(),
              seed=args.seed, only=only)
    if not args.summary_only:
        run.stream_to(sys.stdout, for_event)
    run.run()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        run.closed = True
    if run.closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # keep Python quiet at exit
        return EXIT_OK
    print(run.summary(seed_given=args.seed is not None), file=sys.stderr)
    return EXIT_OK


def _bind_early(config: Config, reuse_port: bool) -> Optional[list]:
    """The listening sockets, bound before the daemon's modules load, so that from here on a
    client's connect is accepted (it waits in the backlog until the daemon serves it) rather
    than refused. None if the port cannot be bound: the daemon's start reports why."""
    from dbackd.edge.binding import bind

    try:
        return bind(config.listen.host, config.listen.port, reuse_port=reuse_port)
    except OSError:
        return None


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    try:
        config = with_overrides(_load(args.config), host=args.host, port=args.port, static_dir=args.static_dir)
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_BAD_CONFIG
    workers = args.workers or config.workers
    index = args.worker_index
    supervising = workers > 1 and index is None
    sockets = None if supervising else _bind_early(config, reuse_port=index is not None)
    # Everything below is loaded while connections already queue.
    import asyncio

    from dbackd.ops import logs

    logs.configure(args.log_level or config.logging.level, args.log_format or config.logging.format)
    if supervising:
        if config.cluster is None:
            print("dbackd: several workers share the world through Redis: add a `cluster` block "
                  "(redis: ${REDIS_URL})", file=sys.stderr)
            return EXIT_BAD_CONFIG
        from dbackd.ops.workers import Supervisor, free_port, worker_argv

        port = config.listen.port or free_port(config.listen.host)
        supervisor = Supervisor(workers, worker_argv(argv or sys.argv[1:]), config.listen.host, port)
        try:
            return asyncio.run(supervisor.run())
        except KeyboardInterrupt:
            return EXIT_OK
    node = None
    if index is not None:
        import structlog

        structlog.contextvars.bind_contextvars(worker=index)  # every line of a worker says which
    if index is not None and config.cluster is not None and config.cluster.node:
        node = f"{config.cluster.node}-w{index}"  # one name per worker
    from dbackd.daemon import Daemon
    from dbackd.ops.process import serve

    daemon = Daemon(config, host=args.host, port=args.port, static_dir=args.static_dir, watch=not args.no_watch,
                    reuse_port=index is not None, node=node, sockets=sockets)
    try:
        return asyncio.run(serve(daemon))
    except KeyboardInterrupt:
        return EXIT_OK
