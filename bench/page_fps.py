"""How smoothly the built-in page draws a big, busy server, and how soon it shows someone.

Starts a real `dbackd` process on a loopback port with one server of N generated users whose
statuses change R times a second (fixed timing, so the rate is steady) and one message a
second, opens the page in headless Chromium, and measures:

- frames per second: requestAnimationFrame callbacks counted by a script added to the page,
  over a window of S seconds after the arrival animation has ended;
- the page's own work per frame (its draw loop, from the page's stats);
- time to the first figure: from the socket opening (`socket-open` mark) to the first frame
  that drew a figure (`first-figure` mark), over several fresh page loads.

    python bench/page_fps.py [--users 1000] [--rate 50] [--seconds 20] [--runs 3] [--loads 5]

Needs `pip install playwright` and Chromium at /usr/bin/chromium (Debian's `chromium`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from reload_latency import read_until  # the bench folder is the script's own

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

CONFIG = """simulation:
  seed: 7
  presence: {{interval: {interval}, timing: fixed}}
  messages: {{interval: 1, timing: fixed}}
servers:
  - snowflake: "900000000000000001"
    id: crowd
    name: The Crowd
    default: true
    users: []
    simulation:
      generate: {{count: {users}}}
"""

# Counts animation frames for `ms` milliseconds; resolves with their timestamps' gaps.
COUNT_FRAMES = """(ms) => new Promise((resolve) => {
  const gaps = [];
  let first = 0, last = 0;
  function tick(t) {
    if (first === 0) first = t; else gaps.push(t - last);
    last = t;
    if (t - first < ms) requestAnimationFrame(tick);
    else resolve({frames: gaps.length, elapsed: last - first, gaps});
  }
  requestAnimationFrame(tick);
})"""


async def drain(proc) -> None:
    while await proc.stderr.readline():
        pass


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def open_page(browser, url: str, width: int, height: int):
    page = await browser.new_page(viewport={"width": width, "height": height})
    await page.goto(url)
    await page.wait_for_function(
        "() => performance.getEntriesByName('first-figure').length > 0", timeout=30000)
    return page


async def marks(page) -> dict:
    return await page.evaluate("""() => {
      const m = (n) => performance.getEntriesByName(n)[0]?.startTime ?? null;
      return {socketOpen: m('socket-open'), firstFigure: m('first-figure')};
    }""")


async def main(users: int, rate: float, seconds: float, runs: int, loads: int, width: int, height: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "crowd.yaml"
        interval = 1 / rate if rate > 0 else 0
        config.write_text(CONFIG.format(interval=interval, users=users))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbackd", "-c", str(config), "--port", "0", "--log-format", "json",
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            url = (await read_until(proc, "daemon.started"))["url"]
            drainer = asyncio.ensure_future(drain(proc))
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                first = []
                for _ in range(loads):
                    page = await open_page(browser, url, width, height)
                    m = await marks(page)
                    first.append({"socket_open_ms": m["socketOpen"], "first_figure_ms": m["firstFigure"],
                                  "open_to_figure_ms": m["firstFigure"] - m["socketOpen"]})
                    await page.close()
                page = await open_page(browser, url, width, height)
                await page.wait_for_function("() => dbackdPage.stats().arriving === 0 && "
                                             f"dbackdPage.stats().figures === {users}", timeout=30000)
                windows = []
                for _ in range(runs):
                    before = await page.evaluate("() => dbackdPage.stats()")
                    counted = await page.evaluate(COUNT_FRAMES, seconds * 1000)
                    after = await page.evaluate("() => dbackdPage.stats()")
                    elapsed_s = counted["elapsed"] / 1000
                    gaps = counted["gaps"]
                    windows.append({
                        "fps": counted["frames"] / elapsed_s,
                        "frame_gap_p95_ms": pct(gaps, 95),
                        "frame_gap_max_ms": max(gaps),
                        "presences_per_s": (after["presences"] - before["presences"]) / elapsed_s,
                        "draw_ms_avg": after["frameMsAvg"],
                        "draw_ms_max": after["frameMsMax"],
                    })
                await browser.close()
            drainer.cancel()
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
    return {"users": users, "rate": rate, "seconds": seconds, "viewport": f"{width}x{height}",
            "windows": windows, "first_figure": first}


def report(r: dict) -> None:
    print(f"{r['users']} users, {r['rate']:g} presence changes/s asked, viewport {r['viewport']}, "
          f"headless Chromium without GPU")
    print()
    print("| window | fps | frame gap p95 | longest frame gap | presences/s seen | page draw avg | page draw max |")
    print("|---|---|---|---|---|---|---|")
    for i, w in enumerate(r["windows"], 1):
        print(f"| {i} ({r['seconds']:g} s) | {w['fps']:.1f} | {w['frame_gap_p95_ms']:.1f} ms | "
              f"{w['frame_gap_max_ms']:.1f} ms | {w['presences_per_s']:.1f} | {w['draw_ms_avg']:.2f} ms | "
              f"{w['draw_ms_max']:.1f} ms |")
    print()
    t = [f["open_to_figure_ms"] for f in r["first_figure"]]
    print(f"socket open -> first figure drawn, {len(t)} fresh loads: "
          f"median {statistics.median(t):.0f} ms, min {min(t):.0f} ms, max {max(t):.0f} ms")
    n = [f["first_figure_ms"] for f in r["first_figure"]]
    print(f"navigation start -> first figure drawn: median {statistics.median(n):.0f} ms, "
          f"min {min(n):.0f} ms, max {max(n):.0f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=50.0, help="presence changes per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of one fps window")
    ap.add_argument("--runs", type=int, default=3, help="fps windows, one after another")
    ap.add_argument("--loads", type=int, default=5, help="fresh page loads timed to the first figure")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON instead")
    a = ap.parse_args()
    result = asyncio.run(main(a.users, a.rate, a.seconds, a.runs, a.loads, a.width, a.height))
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
