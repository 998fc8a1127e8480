"""The built-in page's files: fit for a Content-Security-Policy without 'unsafe-inline', served
with the right types, and every file they name is in the package. No browser needed."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parent.parent / "dbackd" / "page"
SCRIPTS = sorted(STATIC.glob("*.js"))


class Markup(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self.styles = 0
        self.attributes: list[tuple[str, str, str]] = []  # (tag, name, value)
        self.links: list[dict] = []
        self._in_script: dict | None = None
        self._script_text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attributes += [(tag, k, v or "") for k, v in attrs]
        if tag == "script":
            self._in_script, self._script_text = a, ""
        elif tag == "style":
            self.styles += 1
        elif tag == "link":
            self.links.append(a)

    def handle_data(self, data):
        if self._in_script is not None:
            self._script_text += data

    def handle_endtag(self, tag):
        if tag == "script" and self._in_script is not None:
            self.scripts.append((self._in_script, self._script_text))
            self._in_script = None


@pytest.fixture(scope="module")
def markup() -> Markup:
    m = Markup()
    m.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    return m


def test_no_inline_script_style_or_handlers(markup):
    assert markup.scripts, "the page loads its script"
    for attrs, body in markup.scripts:
        assert attrs.get("src"), f"inline <script>: {body[:60]!r}"
        assert body.strip() == ""
    assert markup.styles == 0, "a <style> block needs style-src 'unsafe-inline'"
    for tag, name, value in markup.attributes:
        assert name != "style", f"<{tag} style=...> needs style-src 'unsafe-inline'"
        assert not name.startswith("on"), f"<{tag} {name}=...> is inline script"
        assert not value.strip().lower().startswith("javascript:"), f"<{tag} {name}={value!r}>"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_stay_within_the_policy(script):
    text = script.read_text(encoding="utf-8")
    assert text.startswith("//"), "each script starts with a comment saying its job"
    code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    code = re.sub(r"(^|\s)//.*", "", code)  # comments may name what the code must not do
    for banned in ("alert(", "confirm(", "prompt(", "eval(", "new Function", "innerHTML", "outerHTML",
                   "insertAdjacentHTML", "document.write", 'setAttribute("style"', "cssText"):
        assert banned not in code, f"{script.name} uses {banned}"


def test_every_named_file_is_in_the_package(markup):
    named = {attrs["src"] for attrs, _ in markup.scripts} | {link["href"] for link in markup.links}
    for script in SCRIPTS:
        named |= {m.removeprefix("./") for m in re.findall(r'from\s+"(\./[^"]+)"', script.read_text())}
    css = (STATIC / "style.css").read_text()
    named |= set(re.findall(r'url\("([^"]+)"\)', css))
    for name in named:
        assert "/" not in name and not name.startswith(("http:", "https:")), f"{name}: no subfolders, no CDNs"
        assert (STATIC / name).is_file(), f"{name} is named but not in dbackd/page/"
    # package-data is "page/*": a subfolder would not be installed
    assert not [p for p in STATIC.iterdir() if p.is_dir() and p.name != "__pycache__"]


async def test_served_with_their_types(start_daemon, http):
    d = await start_daemon(text='servers: [{snowflake: "1", id: a, name: A}]')
    types = {".html": "text/html", ".js": "javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in sorted(STATIC.iterdir()):
        if path.suffix not in types:
            continue
        async with http.get(f"http://127.0.0.1:{d.port}/{path.name}") as r:
            assert r.status == 200, path.name
            # module scripts are refused by browsers unless served as JavaScript
            assert types[path.suffix] in r.headers["Content-Type"], (path.name, r.headers["Content-Type"])
            assert await r.read() == path.read_bytes()
