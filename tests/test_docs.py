"""The docs stay true: the reference is the schema's, CI runs the README's test command, the
Python API example runs, the README stays short, and the site builds without a warning."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys


from dbackd.config.reference import reference

from .conftest import ROOT

README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"


def test_configuration_reference_is_generated_from_the_schema():
    page = (DOCS / "configuration.md").read_text()
    section = re.search(r"<!-- reference:start -->\n(.*)<!-- reference:end -->", page, re.S)
    assert section, "docs/configuration.md has no reference section"
    assert section.group(1) == reference(), "run: dbackd schema --markdown, and paste it into docs/configuration.md"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1]
    assert "pytest" in command
    assert command in README


def test_readme_is_short():
    lines = README.count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move the rest into docs/"


def test_readme_shows_the_page():
    assert "(docs/images/page.png)" in README
    assert (DOCS / "images" / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_api_example_runs(capsys):
    """The Python API example of docs/api.md, on a free port and with a short wait."""
    page = (DOCS / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    wait = "await asyncio." + "sleep(60)"  # the example keeps its daemon up for a minute; here, not at all
    assert "port=3000" in code and wait in code
    code = code.replace("port=3000", "port=0").replace(wait, "await asyncio.sleep(0)")
    code = code.replace('"examples/minimal.yaml"', repr(str(ROOT / "examples" / "minimal.yaml")))
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "docs_api"})
    users = capsys.readouterr().out
    assert "'uid': '200000000000000002', 'username': 'bob', 'status': 'idle'" in users


def test_the_site_builds_strictly_without_a_warning(tmp_path):
    """mkdocs.yml's validation makes a broken link or anchor, or a page left out of the nav, a warning."""
    # No skip: the test extra brings the docs extra, so CI's run always builds the site.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    warnings = [line for line in output.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert not warnings, "\n".join(warnings)
    assert (tmp_path / "site" / "configuration" / "index.html").exists()
    shutil.rmtree(tmp_path / "site")
