"""The built-in page in a real browser: Playwright driving Debian's Chromium against real daemons.

Every page is served by the daemon with its Content-Security-Policy (checked on each
document's response), and a test fails on any policy violation,
uncaught error, console error or alert(). Nothing waits for luck: each step waits for a
state of the page, with a timeout.

One Chromium process serves the whole module; each test connects to it over the DevTools
protocol from its own event loop (the daemon fixtures are per test, and so is their loop).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("playwright.async_api", reason="the browser tests need playwright (pip install playwright)")
from aiohttp import web  # noqa: E402
from playwright.async_api import async_playwright, expect  # noqa: E402

from .conftest import EXAMPLE, ROOT, read_until, serving  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                reason=f"the browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CSP = ("default-src 'self'; connect-src 'self'{}; img-src 'self' data:; style-src 'self'; "
       "script-src 'self'; base-uri 'none'; frame-ancestors {}")
ARTIFACTS = ROOT / "tests" / "artifacts"
WAIT = 10_000  # ms: an upper bound for something that must happen, never a pause

WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline")));
"""


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium for the module; yields its DevTools WebSocket address."""
    profile = tempfile.mkdtemp(prefix="dbackd-chromium-")
    log = open(Path(profile) / "chromium.log", "wb")
    proc = subprocess.Popen([CHROMIUM, *ARGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "about:blank"], stdout=log, stderr=log)
    port_file = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
        assert proc.poll() is None, f"chromium exited: {(Path(profile) / 'chromium.log').read_text()[-2000:]}"
        assert time.monotonic() < deadline, "chromium did not open its DevTools port"
        time.sleep(0.05)
    port, path = port_file.read_text().split()[:2]
    try:
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


class Tab:
    """A page under the policy, and what went wrong on it."""

    def __init__(self, page):
        self.page = page
        self.problems: list[str] = []
        self.allowed: list[str] = []  # console errors a test expects (e.g. a refused socket)

    async def open(self, base: str, query: str = "", sockets: str = "", frames: str = "'none'") -> None:
        """Open the page; `sockets`: the other socket origins its policy must allow (" ws://…"),
        `frames`: the origins that may frame it."""
        response = await self.page.goto(base.rstrip("/") + "/" + query)
        assert response is not None and response.headers.get("content-security-policy") == CSP.format(sockets, frames)
        # Proof that the policy is in force: an inline script does not run (and is reported).
        probe = "Executing inline script violates"
        self.allowed.append(probe)
        async with self.page.expect_console_message(lambda m: probe in m.text, timeout=WAIT):
            ran = await self.page.evaluate("""() => {
          const s = document.createElement("script");
          s.textContent = "window.__inlineRan = true";
          document.head.append(s);
          s.remove();
          return window.__inlineRan === true;
        }""")
        self.allowed.remove(probe)
        assert not ran, "the Content-Security-Policy is not in force"
        await self.page.wait_for_function("() => window.__cspViolations.length === 1", timeout=WAIT)
        await self.page.evaluate("() => { window.__cspViolations.length = 0; }")

    def console(self, msg) -> None:
        if msg.type == "error" and not any(a in msg.text for a in self.allowed):
            self.problems.append(f"console error: {msg.text}")


@pytest.fixture
async def tab(chromium):
    async with async_playwright() as p:
        browser = await p.chromium.connect_over_cdp(chromium)
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        t = Tab(page)
        page.on("pageerror", lambda e: t.problems.append(f"page error: {e}"))
        page.on("console", t.console)

        async def on_dialog(dialog):
            t.problems.append(f"{dialog.type}(): {dialog.message}")
            await dialog.dismiss()
        page.on("dialog", on_dialog)

        await page.add_init_script(WATCH_CSP)
        try:
            yield t
            violations = await page.evaluate("() => window.__cspViolations || []")
            assert violations == [], f"Content-Security-Policy violations: {violations}"
            assert t.problems == []
        finally:
            await context.close()


def base(d) -> str:
    return f"http://127.0.0.1:{d.port}/"


def rgb(hex_colour: str) -> str:
    n = int(hex_colour[1:], 16)
    return f"rgb({n >> 16}, {(n >> 8) & 255}, {n & 255})"


async def wait_live(page, server: str) -> None:
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT)
    await expect(page.locator("#server-name")).to_have_attribute("data-server", server, timeout=WAIT)


async def expect_users(page, users: list[dict]) -> None:
    """The accessible list shows exactly these users, each with its status and colour."""
    rows = page.locator("#people li")
    await expect(rows).to_have_count(len(users), timeout=WAIT)
    for u in users:
        row = page.locator(f'#people li[data-uid="{u["uid"]}"]')
        await expect(row).to_have_attribute("data-status", u["status"], timeout=WAIT)
        await expect(row).to_have_attribute("data-color", u["roleColor"].lower())
        await expect(row.locator(".name")).to_have_text(u["username"])
        await expect(row.locator(".swatch")).to_have_css("background-color", rgb(u["roleColor"]))


async def figures(page) -> int:
    return await page.evaluate("() => dbackdPage.stats().figures")


async def test_default_server_users_appear_with_their_colours(start_daemon, tab):
    d = await start_daemon()
    await tab.open(base(d))
    page = tab.page
    await wait_live(page, "dworld")
    await expect_users(page, d.users("dworld"))
    await expect(page).to_have_url(re.compile(r"[?&]s=dworld\b"))
    await expect(page.locator("#server-name")).to_have_text("D-World")
    # drawn on the canvas too, and the marks the benchmark reads are there
    await page.wait_for_function("() => performance.getEntriesByName('first-figure').length === 1", timeout=WAIT)
    assert await page.evaluate("() => performance.getEntriesByName('socket-open').length") == 1
    assert await figures(page) == 4
    # the legend counts them by status
    for status in ("online", "idle", "dnd", "offline"):
        n = sum(u["status"] == status for u in d.users("dworld"))
        await expect(page.locator(f'#legend [data-count="{status}"]')).to_have_text(str(n))
    # the server list, the lock on the private one, the pointer to the real frontend
    await expect(page.locator("#servers button")).to_have_count(4)
    await expect(page.locator('#servers button[data-server="oauth"] .lock')).to_have_count(1)
    await expect(page.locator('#servers button[data-server="dworld"]')).to_have_attribute("aria-current", "true")
    await expect(page.locator("#socket-hint")).to_have_text(f"?socketURL=ws://127.0.0.1:{d.port}/ws")
    assert await page.locator('a[href="healthz"]').count() == 1
    assert await page.locator('a[href="api/version"]').count() == 1


async def test_presence_and_messages_sent_through_the_daemon_appear(start_daemon, tab):
    d = await start_daemon()
    await tab.open(base(d))
    page = tab.page
    await wait_live(page, "dworld")
    await expect(page.locator("#people li")).to_have_count(4, timeout=WAIT)
    user = next(u for u in d.users("dworld") if u["status"] != "dnd")

    await d.broadcast_presence("dworld", user["uid"], "dnd")
    await expect(page.locator(f'#people li[data-uid="{user["uid"]}"]')).to_have_attribute("data-status", "dnd",
                                                                                          timeout=WAIT)
    await expect(page.locator('#legend [data-count="dnd"]')).to_have_text(
        str(sum(u["status"] == "dnd" for u in d.users("dworld"))))

    # a new user arrives, changes colour, then leaves
    await d.broadcast_presence("dworld", "900000000000000001", "online", username="visitor", role_color="#123456")
    visitor = page.locator('#people li[data-uid="900000000000000001"]')
    await expect(visitor).to_have_attribute("data-color", "#123456", timeout=WAIT)
    await expect(visitor.locator(".name")).to_have_text("visitor")
    await page.wait_for_function("() => dbackdPage.stats().figures === 5", timeout=WAIT)
    await d.broadcast_presence("dworld", "900000000000000001", "idle", role_color="#abcdef")
    await expect(visitor).to_have_attribute("data-color", "#abcdef", timeout=WAIT)
    await expect(visitor).to_have_attribute("data-status", "idle")
    await d.broadcast_presence("dworld", "900000000000000001", "offline", delete=True)
    await expect(visitor).to_have_count(0, timeout=WAIT)
    await page.wait_for_function("() => dbackdPage.stats().figures === 4", timeout=WAIT)

    # two messages in one channel: the second waits for the first bubble
    speaker = d.users("dworld")[0]
    await d.broadcast_message("dworld", speaker["uid"], "hello from the test", "1")
    await d.broadcast_message("dworld", speaker["uid"], "and a second line", "1")
    first = page.locator("#log li", has_text="hello from the test")
    second = page.locator("#log li", has_text="and a second line")
    await expect(first).to_have_attribute("data-bubble", "showing", timeout=WAIT)
    await expect(first.locator(".who")).to_have_text(speaker["username"])
    await expect(second).to_have_attribute("data-bubble", "queued")
    await expect(first).to_have_attribute("data-bubble", "done", timeout=WAIT)
    await expect(second).to_have_attribute("data-bubble", "showing", timeout=WAIT)
    # another channel does not wait
    await d.broadcast_message("dworld", speaker["uid"], "elsewhere", "2")
    await expect(page.locator("#log li", has_text="elsewhere")).to_have_attribute("data-bubble", "showing",
                                                                                 timeout=WAIT)


async def test_switching_server(start_daemon, tab):
    d = await start_daemon()
    await tab.open(base(d), "?s=docs")
    page = tab.page
    await wait_live(page, "docs")
    await expect_users(page, d.users("docs"))

    await page.locator('#servers button[data-server="repos"]').click()
    await wait_live(page, "repos")
    await expect_users(page, d.users("repos"))
    await expect(page).to_have_url(re.compile(r"[?&]s=repos\b"))
    await expect(page.locator('#servers button[data-server="repos"]')).to_have_attribute("aria-current", "true")
    await expect(page.locator("#server-name")).to_have_text("My Repos")
    await page.wait_for_function("() => dbackdPage.stats().figures === 21", timeout=WAIT)
    # events of the server left behind no longer reach the page; the new server's do
    before = await page.evaluate("() => dbackdPage.stats().presences")
    await d.broadcast_presence("docs", d.users("docs")[0]["uid"], "dnd")
    uid = d.users("repos")[0]["uid"]
    await d.broadcast_presence("repos", uid, "idle" if d.users("repos")[0]["status"] != "idle" else "online")
    await expect(page.locator(f'#people li[data-uid="{uid}"]')).to_have_attribute(
        "data-status", d.users("repos")[0]["status"], timeout=WAIT)
    assert await page.evaluate("() => dbackdPage.stats().presences") == before + 1


async def test_unknown_server_is_an_inline_error_and_the_default_is_shown(start_daemon, tab):
    d = await start_daemon()
    await tab.open(base(d), "?s=nowhere")
    page = tab.page
    await expect(page.locator("#banner")).to_be_visible(timeout=WAIT)
    await expect(page.locator("#banner-text")).to_have_text("Sorry, couldn't connect to that Discord server.")
    await wait_live(page, "dworld")
    await expect(page.locator("#people li")).to_have_count(4, timeout=WAIT)
    await page.locator("#banner-close").click()
    await expect(page.locator("#banner")).to_be_hidden()


async def test_login_to_the_private_demo_server(start_daemon, tab):
    d = await start_daemon()
    await tab.open(base(d))
    page = tab.page
    await wait_live(page, "dworld")
    await page.locator('#servers button[data-server="oauth"]').click()
    dialog = page.locator("#login")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#login-server")).to_have_text("OAuth2 Protected Server")
    await expect(page.locator("#login-demo")).to_be_visible()

    # a real login that the access rule does not let in: told in the dialog, and the page
    # goes back to the server it showed
    await page.locator("#login-token").fill("guest-token")
    await page.locator("#login-user").fill("323456789012345999")
    await page.locator("#login-discord button[type=submit]").click()
    await expect(page.locator("#login-error")).to_have_text(
        "Discord authentication failed. Please try logging in again.", timeout=WAIT)
    await expect(dialog).to_be_visible()
    uid = d.users("dworld")[1]["uid"]
    await d.broadcast_presence("dworld", uid, "offline")
    await expect(page.locator(f'#people li[data-uid="{uid}"]')).to_have_attribute("data-status", "offline",
                                                                                 timeout=WAIT)

    await page.locator("#login-token").fill("demo-token")
    await page.locator("#login-user").fill("323456789012345001")
    await page.locator("#login-discord button[type=submit]").click()
    await expect(dialog).to_be_hidden(timeout=WAIT)
    await wait_live(page, "oauth")
    await expect_users(page, d.users("oauth"))
    await expect(page).to_have_url(re.compile(r"[?&]s=oauth\b"))
    assert "demo-token" not in page.url


async def test_login_with_a_legacy_password(start_daemon, tab):
    d = await start_daemon(text="""
servers:
  - {snowflake: "1", id: open, name: Open, default: true, users: [{uid: "11", username: alice}]}
  - {snowflake: "2", id: club, name: The Club, passworded: true, password: hunter2,
     users: [{uid: "21", username: carol, status: idle, roleColor: "#ff9f43"}]}
""")
    await tab.open(base(d), "?s=club")
    page = tab.page
    # a first visit to a private server: the default is shown behind the login
    await expect(page.locator("#login")).to_be_visible(timeout=WAIT)
    await wait_live(page, "open")
    await page.locator("#login-password").fill("wrong")
    await page.locator("#login-password-form button[type=submit]").click()
    await expect(page.locator("#login-error")).to_have_text(
        "This server requires Discord authentication. Please login with Discord.", timeout=WAIT)
    await page.locator("#login-password").fill("hunter2")
    await page.locator("#login-password-form button[type=submit]").click()
    await expect(page.locator("#login")).to_be_hidden(timeout=WAIT)
    await wait_live(page, "club")
    await expect_users(page, d.users("club"))


async def test_socket_url_parameter_points_at_a_listed_daemon(start_daemon, tab):
    there = await start_daemon(text='servers: [{snowflake: "2", id: there, name: There, '
                                    'users: [{uid: "2", username: b}, {uid: "3", username: c}]}]')
    here = await start_daemon(text=f"""
servers: [{{snowflake: "1", id: here, name: Here, users: [{{uid: "1", username: a}}]}}]
static: [{{path: /, builtin: true, sockets: ["ws://127.0.0.1:{there.port}"]}}]
""")
    await tab.open(base(here), f"?socketURL=ws://127.0.0.1:{there.port}/ws", sockets=f" ws://127.0.0.1:{there.port}")
    page = tab.page
    await wait_live(page, "there")
    await expect(page.locator("#people li")).to_have_count(2, timeout=WAIT)
    await expect(page.locator("#socket-hint")).to_have_text(f"?socketURL=ws://127.0.0.1:{there.port}/ws")


async def test_socket_url_parameter_pointing_at_an_unlisted_socket_is_refused_without_a_login(start_daemon, tab):
    # Another daemon stands in for an attacker's: a private server there would make the page ask
    # for a login on this daemon's origin and send the token to it.
    there = await start_daemon(text="""
servers:
  - {snowflake: "1", id: open, name: Open, default: true, users: [{uid: "11", username: alice}]}
  - {snowflake: "2", id: club, name: The Club, passworded: true, password: hunter2, users: []}
""")
    here = await start_daemon(text='servers: [{snowflake: "1", id: here, name: Here, users: [{uid: "1", username: a}]}]')
    await tab.open(base(here), f"?socketURL=ws://127.0.0.1:{there.port}/ws&s=club")
    page = tab.page
    await expect(page.locator("#banner-text")).to_have_text(
        f"This page connects only to its own daemon and to the addresses its operator allows; "
        f"ws://127.0.0.1:{there.port}/ws is not one of them. It did not connect there and asks for no login.",
        timeout=WAIT)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "failed")
    await expect(page.locator("#login")).to_be_hidden()
    assert there.health()["connections"] == 0
    # the browser itself refuses such a socket too, whatever a script on the page tried
    tab.allowed.append(f"Connecting to 'ws://127.0.0.1:{there.port}/ws' violates")
    blocked = await page.evaluate(f"""() => new Promise((done) => {{
      document.addEventListener("securitypolicyviolation", (e) => done(e.blockedURI), {{once: true}});
      try {{ new WebSocket("ws://127.0.0.1:{there.port}/ws"); }} catch (err) {{ done("thrown " + err.name); }}
    }})""")
    assert blocked in (f"ws://127.0.0.1:{there.port}/ws", "thrown SecurityError"), blocked
    await page.evaluate("() => { window.__cspViolations.length = 0; }")
    assert there.health()["connections"] == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_reconnects_after_the_daemon_restarts_and_rejoins_the_same_server(tab):
    port = free_port()
    page = tab.page
    # while the daemon is down, Chromium logs each refused attempt
    tab.allowed.append(f"WebSocket connection to 'ws://127.0.0.1:{port}/ws' failed")
    async with serving(EXAMPLE, "--port", str(port)) as (proc, url):
        await tab.open(url, "?s=repos")
        await wait_live(page, "repos")
        await expect(page.locator("#people li")).to_have_count(21, timeout=WAIT)
        proc.terminate()
        await proc.wait()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting", timeout=WAIT)
    await expect(page.locator("#conn-text")).to_contain_text("Reconnecting")
    await expect(page.locator("#stage")).to_have_class(re.compile(r"\bstale\b"))
    # the world stays on the page while it waits
    await expect(page.locator("#people li")).to_have_count(21)

    async with serving(EXAMPLE, "--port", str(port)) as (proc, url):
        joined = await asyncio.wait_for(read_until(proc, "socket.joined"), 30)
        assert joined["server"] == "repos"
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT)
        await expect(page.locator("#stage")).not_to_have_class(re.compile(r"\bstale\b"), timeout=WAIT)
        await expect(page.locator("#people li")).to_have_count(21)
        await expect(page).to_have_url(re.compile(r"[?&]s=repos\b"))
        assert await page.evaluate("() => dbackdPage.stats().joins") == 2


class Framing:
    """Another site on its own loopback origin; its page shows `src` in an <iframe>."""

    def __init__(self):
        self.origin = ""
        self.src = "about:blank"

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=f"""<!DOCTYPE html><title>A community</title>
<h1>Our world</h1><iframe src="{self.src}" width="800" height="500" title="The world"></iframe>""")

    async def favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)  # the browser asks; a 404 would be a console error


@contextlib.asynccontextmanager
async def site_framing():
    framing = Framing()
    app = web.Application()
    app.router.add_get("/", framing.page)
    app.router.add_get("/favicon.ico", framing.favicon)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    framing.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield framing
    finally:
        await runner.cleanup()


EMBEDDED = """
servers:
  - {snowflake: "1", id: open, name: Open, default: true, users: [{uid: "11", username: alice}, {uid: "12", username: bob}]}
  - {snowflake: "2", id: club, name: The Club, passworded: true, password: hunter2, users: [{uid: "21", username: carol}]}
static: [{path: /, builtin: true, frame_ancestors: ["%s"]}]
"""


async def test_the_compact_page_in_a_frame_of_an_allowed_site_shows_the_world_and_asks_for_no_login(
        start_daemon, tab):
    page = tab.page
    async with site_framing() as site:
        d = await start_daemon(text=EMBEDDED % site.origin)
        # the private server asked for: the page shows the default one and says where to log in
        site.src = f"{base(d)}?embed=1&s=club"
        response = await page.goto(site.origin + "/")
        assert response is not None and response.ok
        world = page.frame_locator("iframe")
        await expect(world.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT)
        await expect(world.locator("#server-name")).to_have_attribute("data-server", "open", timeout=WAIT)
        await expect(world.locator("#banner-text")).to_have_text(
            "The Club is private: open the page on its own to log in.", timeout=WAIT)
        await expect(world.locator("#login")).to_be_hidden()
        await expect(world.locator("#terrarium")).to_be_visible()
        await expect(world.locator(".side")).to_be_hidden()  # compact: no side panel
        full = world.locator("#open-full")
        await expect(full).to_be_visible()
        await expect(full).to_have_attribute("target", "_blank")
        await expect(full).to_have_attribute("href", f"{base(d)}?s=open")
        frame = next(f for f in page.frames if f.url.startswith(base(d)))
        await frame.wait_for_function("() => dbackdPage.stats().figures === 2", timeout=WAIT)
        await frame.wait_for_function("() => dbackdPage.stats().arriving === 0", timeout=WAIT)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "embed.png"), clip={"x": 0, "y": 0, "width": 820, "height": 600})
        response = await page.request.get(site.src)
        assert response.headers["content-security-policy"] == CSP.format("", site.origin)


async def test_the_page_in_a_frame_of_an_unlisted_site_is_refused(start_daemon, tab):
    page = tab.page
    d = await start_daemon(text=EMBEDDED % "http://127.0.0.1:1")
    tab.allowed.append("violates the following Content Security Policy directive: \"frame-ancestors")
    async with site_framing() as site:
        site.src = f"{base(d)}?embed=1"
        async with page.expect_console_message(lambda m: "frame-ancestors" in m.text, timeout=WAIT):
            await page.goto(site.origin + "/")
        await expect(page.locator("h1")).to_have_text("Our world")
        await expect(page.frame_locator("iframe").locator("#terrarium")).to_have_count(0)
        assert d.health()["connections"] == 0


async def test_the_embed_opened_on_its_own_still_logs_in(start_daemon, tab):
    d = await start_daemon(text=EMBEDDED % "http://127.0.0.1:1")
    await tab.open(base(d), "?embed=1&s=club", frames="http://127.0.0.1:1")
    page = tab.page
    await expect(page.locator("#login")).to_be_visible(timeout=WAIT)
    await expect(page.locator(".side")).to_be_hidden()
    await page.locator("#login-password").fill("hunter2")
    await page.locator("#login-password-form button[type=submit]").click()
    await wait_live(page, "club")
    await page.wait_for_function("() => dbackdPage.stats().figures === 1", timeout=WAIT)


async def test_screenshot(start_daemon, tab):
    d = await start_daemon()
    await tab.open(base(d))
    page = tab.page
    await wait_live(page, "dworld")
    await d.broadcast_message("dworld", d.users("dworld")[0]["uid"], "D-Zone rocks!", "1")
    await expect(page.locator("#log li").first).to_have_attribute("data-bubble", "showing", timeout=WAIT)
    await page.wait_for_function("() => dbackdPage.stats().arriving === 0", timeout=WAIT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "page.png"))
    assert (ARTIFACTS / "page.png").stat().st_size > 10_000
