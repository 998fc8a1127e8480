"""Small network clients of a running daemon: `tail` (a socket that prints every frame) and the
HTTP API's `say` and `presence`.

They talk to a daemon over the network like any other client, print for people, and
return exit codes: 0 fine, 1 refused or unreachable, 2 no API token to send.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional
from urllib.parse import quote

import aiohttp

from dbackd.core import jsontext

EXIT_OK, EXIT_PROBLEMS, EXIT_NO_TOKEN = 0, 1, 2
REQUEST_TIMEOUT = 10.0


async def tail_frames(url: str, server: str, password: Optional[str]) -> int:
    """Print the frames a daemon sends to one joined client, one JSON line each."""
    request: dict = {"server": server}
    if password:
        request["password"] = password
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(connect=REQUEST_TIMEOUT)) as http:
            async with http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5)) as ws:
                await ws.send_json({"type": "connect", "data": request})
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        print(msg.data, flush=True)
    except (aiohttp.ClientError, OSError) as exc:
        print(f"dbackd tail: cannot reach {url}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _token(args: argparse.Namespace) -> Optional[str]:
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            return f.read().strip() or None
    return os.environ.get("DBACKD_API_TOKEN") or None


def api_request(args: argparse.Namespace) -> tuple[str, dict]:
    """`say` and `presence` as (API path, body)."""
    if args.command == "say":
        return "messages", {"uid": args.uid, "message": args.text, "channel": args.channel}
    body = {"uid": args.uid, "status": args.status}
    if args.username:
        body["username"] = args.username
    if args.color:
        body["roleColor"] = args.color
    if args.delete:
        body["delete"] = True
    return "presence", body


async def api_command(args: argparse.Namespace) -> int:
    """`say` and `presence`: one request to the HTTP API; the daemon's error is printed as it is."""
    prog = f"dbackd {args.command}"
    try:
        token = _token(args)
    except OSError as exc:
        print(f"{prog}: cannot read the token file: {exc}", file=sys.stderr)
        return EXIT_NO_TOKEN
    if token is None:
        print(f"{prog}: no API token: set DBACKD_API_TOKEN or give --token-file", file=sys.stderr)
        return EXIT_NO_TOKEN
    path, body = api_request(args)
    url = f"{args.url.rstrip('/')}/api/servers/{quote(args.server, safe='')}/{path}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as http:
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
                text = await r.text()
                if r.status < 300:
                    return EXIT_OK
                answer = jsontext.parse_or_none(text)
                reason = answer.get("error") if isinstance(answer, dict) else None
                reason = reason or text.strip() or r.reason
                print(f"{prog}: {r.status}: {reason}", file=sys.stderr)
                return EXIT_PROBLEMS
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        print(f"{prog}: cannot reach {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_PROBLEMS
