"""Members' faces: the daemon fetches avatars from the fake Discord's CDN, keeps them on disk and
serves them under the built-in page; a browser never asks Discord."""
from __future__ import annotations

import pytest

from .fakes.discord import _colour_of, solid_png
from .test_discord import ALICE, BOB, BOT, CAROL, HOME, config, fake, quick_gateway, ready  # noqa: F401
from .test_page_browser import chromium, tab  # noqa: F401

discord = pytest.importorskip("discord", minversion="2.4")

AVATAR = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def with_faces(fake, tmp_path, server: str = "", top: str = ""):
    fake.guild(HOME).members[ALICE].user.avatar = AVATAR
    return config(fake, server=server, top=f"""  cdn_base: {fake.cdn_base}
  face_cache: {{dir: "{tmp_path / 'faces'}", fetches_per_second: 50}}
{top}""")


async def test_a_face_is_fetched_once_from_the_cdn_kept_and_served(start_daemon, fake, http, tmp_path):
    d = await start_daemon(with_faces(fake, tmp_path))
    await ready(d)
    url = f"http://127.0.0.1:{d.port}/faces/{HOME}/{ALICE}.png"
    async with http.get(url) as r:
        assert r.status == 200 and r.content_type == "image/png"
        assert await r.read() == solid_png(64, _colour_of(AVATAR))
        assert "img-src 'self' data:" in r.headers["Content-Security-Policy"]
    assert fake.counts["cdn_requests"] == 1
    assert len(list((tmp_path / "faces").glob("*.png"))) == 1
    async with http.get(url) as r:  # from the disk cache
        assert r.status == 200 and await r.read() == solid_png(64, _colour_of(AVATAR))
    assert fake.counts["cdn_requests"] == 1
    # a member without an avatar of their own wears Discord's default one
    async with http.get(f"http://127.0.0.1:{d.port}/faces/{HOME}/{BOB}.png") as r:
        assert r.status == 200 and await r.read() == solid_png(64, 0x5865F2)
    # not shown (a bot): no face, and the page may ask again later
    async with http.get(f"http://127.0.0.1:{d.port}/faces/{HOME}/{BOT}.png") as r:
        assert r.status == 204 and "X-Faces" not in r.headers
    # a server without faces (a simulated one): the page is told to stop asking
    async with http.get(f"http://127.0.0.1:{d.port}/faces/1/11.png") as r:
        assert r.status == 204 and r.headers["X-Faces"] == "off"


async def test_faces_are_fetched_no_faster_than_the_config_says(start_daemon, fake, http, tmp_path):
    fake.guild(HOME).members[ALICE].user.avatar = AVATAR
    d = await start_daemon(config(fake, top=f"""  cdn_base: {fake.cdn_base}
  face_cache: {{dir: "{tmp_path / 'faces'}", fetches_per_second: 0.01}}"""))
    await ready(d)
    async with http.get(f"http://127.0.0.1:{d.port}/faces/{HOME}/{ALICE}.png") as r:
        assert r.status == 200
    # the next fetch would be 100 s away: no face for now (the page asks again later), and no wait
    async with http.get(f"http://127.0.0.1:{d.port}/faces/{HOME}/{BOB}.png") as r:
        assert r.status == 204 and "X-Faces" not in r.headers
    assert fake.counts["cdn_requests"] == 1
    async with http.get(f"http://127.0.0.1:{d.port}/faces/{HOME}/{ALICE}.png") as r:  # kept: no fetch needed
        assert r.status == 200
    assert fake.counts["cdn_requests"] == 1


async def test_faces_off_and_private_servers_serve_none(start_daemon, fake, http, tmp_path):
    d = await start_daemon(with_faces(fake, tmp_path, top="  faces: false"))
    await ready(d)
    async with http.get(f"http://127.0.0.1:{d.port}/faces/{HOME}/{ALICE}.png") as r:
        assert r.status == 204 and r.headers["X-Faces"] == "off"
    await d.stop()
    d = await start_daemon(with_faces(fake, tmp_path, server="    passworded: true\n    password: hunter2"))
    await ready(d)
    async with http.get(f"http://127.0.0.1:{d.port}/faces/{HOME}/{ALICE}.png") as r:
        assert r.status == 204 and r.headers["X-Faces"] == "off"
    assert fake.counts["cdn_requests"] == 0


async def test_a_cdn_that_cannot_be_reached_gives_a_plain_figure(start_daemon, fake, http, tmp_path):
    fake.guild(HOME).members[ALICE].user.avatar = AVATAR
    d = await start_daemon(config(fake, top=f"""  cdn_base: http://127.0.0.1:1
  face_cache: {{dir: "{tmp_path / 'faces'}"}}"""))
    await ready(d)
    async with http.get(f"http://127.0.0.1:{d.port}/faces/{HOME}/{ALICE}.png") as r:
        assert r.status == 204 and "X-Faces" not in r.headers
    assert list((tmp_path / "faces").glob("*.png")) == []


async def test_the_page_shows_the_faces_on_the_figures_and_in_the_list(start_daemon, fake, tab, tmp_path):
    from playwright.async_api import expect

    from .test_page_browser import ARTIFACTS, WAIT, base, wait_live

    d = await start_daemon(with_faces(fake, tmp_path))
    await ready(d)
    await tab.open(base(d), "?s=home")
    page = tab.page
    await wait_live(page, "home")
    # everyone shown wears a face: alice her avatar, bob and carol Discord's default one
    await page.wait_for_function("() => dbackdPage.stats().faces === 3", timeout=WAIT)
    face = page.locator(f'#people li[data-uid="{ALICE}"] .swatch img.face')
    await expect(face).to_have_attribute("src", f"{base(d)}faces/{HOME}/{ALICE}.png", timeout=WAIT)
    await page.wait_for_function(f"""() => document.querySelector('#people li[data-uid="{ALICE}"] img.face')
                                     ?.naturalWidth === 64""", timeout=WAIT)
    # each image fetched once, by the daemon (two members may share a default avatar)
    defaults = {(int(uid) >> 22) % 6 for uid in (BOB, CAROL)}
    assert fake.counts["cdn_requests"] == 1 + len(defaults)
    await page.wait_for_function("() => dbackdPage.stats().arriving === 0", timeout=WAIT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "faces.png"))
