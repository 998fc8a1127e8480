"""Start-up benchmark: process start to an accepting port and to the first `server-list`,
dbackd against the original d-back 0.0.18, in the same run.

Each subject is a fresh process on a free loopback port:

  dbackd          `python -m dbackd --host 127.0.0.1 --port P --no-watch` (the embedded demo)
  dbackd.compat   a d-back program on the compatibility layer: WebSocketServer(port=P).start()
  d-back          `python -m d_back --host 127.0.0.1 --port P` (d-back's mock world)
  d-back program  the same program on d-back itself: d_back.server.WebSocketServer

For each, the clock starts just before the process is spawned. The bench tries a TCP
connect every millisecond until one succeeds ("accepting"), then speaks the WebSocket
handshake on that same connection and reads frames until the first `server-list`
("server-list"). The subjects take turns, run after run, so the machine's load falls on
all of them alike; the medians (and the range) of N runs are printed. It also times a
bare `import dbackd.cli` and `import d_back.server` in fresh interpreters. Every process is
timed with its bytecode cached (an untimed first run writes it), as an installed package
has it. `--other DIR` adds the same two dbackd subjects run from another copy of the
package (another revision), so a change is compared in the same runs.

d-back runs from a side virtualenv that is not a dependency of dbackd:

    python3 -m venv /tmp/dback-venv && /tmp/dback-venv/bin/pip install d-back==0.0.18
    .venv/bin/python bench/startup.py --runs 20 [--dback-python /tmp/dback-venv/bin/python] [--other DIR]
    # DIR: mkdir DIR && git archive REV dbackd examples schemas | tar -x -C DIR

Without that virtualenv the d-back subjects are skipped. Loopback only.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

DEFAULT_DBACK_PYTHON = "/tmp/dback-venv/bin/python"
DEADLINE = 20.0  # seconds a subject gets to accept and send its server-list

PROGRAM = """
import asyncio, sys
from {module} import WebSocketServer
asyncio.run(WebSocketServer(port=int(sys.argv[1]), host="127.0.0.1").start())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def _frames(sock: socket.socket):
    """Text frames from the server (unmasked, whole: neither server fragments its frames)."""
    while True:
        head = _read_exactly(sock, 2)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(_read_exactly(sock, 2), "big")
        elif length == 127:
            length = int.from_bytes(_read_exactly(sock, 8), "big")
        payload = _read_exactly(sock, length)
        if opcode == 0x8:
            raise ConnectionError("the server closed the socket")
        if opcode == 0x1:
            yield payload


def first_server_list(sock: socket.socket, port: int) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
    rest = head.split(b"\r\n\r\n", 1)[1]
    if rest:  # a frame that came with the handshake's answer
        sock = _Prefixed(sock, rest)  # type: ignore[assignment]
    for payload in _frames(sock):
        if json.loads(payload).get("type") == "server-list":
            return


class _Prefixed:
    def __init__(self, sock: socket.socket, data: bytes):
        self.sock, self.data = sock, data

    def recv(self, n: int) -> bytes:
        if self.data:
            out, self.data = self.data[:n], self.data[n:]
            return out
        return self.sock.recv(n)


def time_one(argv: list[str], port: int, path: Optional[str] = None) -> tuple[float, float]:
    """(seconds to accepting, seconds to the first server-list) of one fresh process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if path:
        env["PYTHONPATH"] = path  # another copy of dbackd, found before the installed one
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # timed with the bytecode cached, as an installed package has it
    start = time.perf_counter()
    # From a neutral directory: `-m` and `-c` put the working directory first on sys.path.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, cwd=tempfile.gettempdir())
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:3]} exited with {proc.returncode} before accepting")
            if time.perf_counter() - start > DEADLINE:
                raise RuntimeError(f"{argv[:3]} did not accept within {DEADLINE} s")
            sock = socket.socket()
            try:
                sock.connect(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                sock.close()
                time.sleep(0.001)
        accepting = time.perf_counter() - start
        sock.settimeout(DEADLINE)
        with sock:
            first_server_list(sock, port)
        listed = time.perf_counter() - start
        return accepting, listed
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def time_import(python: str, module: Optional[str], path: Optional[str] = None) -> float:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if path:
        env["PYTHONPATH"] = path
    start = time.perf_counter()
    subprocess.run([python, "-c", f"import {module}" if module else "pass"], check=True, env=env,
                   cwd=tempfile.gettempdir())
    return time.perf_counter() - start


Subject = tuple[Callable[[int], list[str]], Optional[str]]  # argv for a port, PYTHONPATH


def subjects(dback_python: Optional[str], other: Optional[str]) -> dict[str, Subject]:
    me = sys.executable

    def dbackd(port: int) -> list[str]:
        return [me, "-m", "dbackd", "--host", "127.0.0.1", "--port", str(port), "--no-watch", "--log-level", "warning"]

    def compat(port: int) -> list[str]:
        return [me, "-c", PROGRAM.format(module="dbackd.compat"), str(port)]

    out: dict[str, Subject] = {"dbackd": (dbackd, None), "dbackd.compat": (compat, None)}
    if other:
        out["dbackd (other)"] = (dbackd, other)
        out["compat (other)"] = (compat, other)
    if dback_python:
        out["d-back"] = (lambda port: [dback_python, "-m", "d_back", "--host", "127.0.0.1", "--port", str(port)], None)
        out["d-back program"] = (lambda port: [dback_python, "-c", PROGRAM.format(module="d_back.server"), str(port)],
                                 None)
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:6.0f} ms  ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each subject (default %(default)s)")
    parser.add_argument("--dback-python", default=DEFAULT_DBACK_PYTHON,
                        help="the Python of a virtualenv with d-back 0.0.18 (default %(default)s)")
    parser.add_argument("--other", metavar="DIR",
                        help="also time the dbackd package found in DIR (a copy of another revision: "
                             "git archive REV dbackd examples schemas | tar -x -C DIR), in the same runs")
    args = parser.parse_args()
    dback_python = args.dback_python if Path(args.dback_python).exists() else None
    if dback_python is None:
        print(f"no d-back at {args.dback_python}: only dbackd is timed (see the docstring to make the venv)")
    else:
        version = subprocess.run([dback_python, "-m", "d_back", "--version"], capture_output=True, text=True)
        print(f"d-back: {version.stdout.strip() or version.stderr.strip()} ({dback_python})")
    runs = subjects(dback_python, args.other)
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runs}
    imports: dict[str, list[float]] = {"python -c pass": [], "import dbackd.cli": []}
    if dback_python:
        imports["import d_back.server"] = []
    if args.other:
        imports["import dbackd.cli (other)"] = []
    for name, (argv, path) in runs.items():  # untimed: writes the bytecode caches, warms the file cache
        port = free_port()
        time_one(argv(port), port, path)
    for _ in range(args.runs):
        for name, (argv, path) in runs.items():
            port = free_port()
            accepting, listed = time_one(argv(port), port, path)
            results[name][0].append(accepting)
            results[name][1].append(listed)
        imports["python -c pass"].append(time_import(sys.executable, None))
        imports["import dbackd.cli"].append(time_import(sys.executable, "dbackd.cli"))
        if args.other:
            imports["import dbackd.cli (other)"].append(time_import(sys.executable, "dbackd.cli", args.other))
        if dback_python:
            imports["import d_back.server"].append(time_import(dback_python, "d_back.server"))
    print(f"\n{args.runs} runs each; median (min-max), from process start\n")
    print(f"{'':16} {'accepting':28} {'first server-list'}")
    for name, (accepting, listed) in results.items():
        print(f"{name:16} {ms(accepting):28} {ms(listed)}")
    print()
    for name, values in imports.items():
        print(f"{name:30} {ms(values)}  (a whole interpreter: start, import, exit)")


if __name__ == "__main__":
    main()
