"""The README stays true: its reference is the schema's, and CI runs the README's test command."""
from __future__ import annotations

import re

from dbackd.config.reference import reference

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_reference_is_generated_from_the_schema():
    section = re.search(r"<!-- reference:start -->\n(.*)<!-- reference:end -->", README, re.S)
    assert section, "README has no reference section"
    assert section.group(1) == reference(), "run: dbackd schema --markdown, and paste it into the README"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1]
    assert "pytest" in command
    assert command in README


def test_readme_python_api_example_runs(capsys):
    """The README's Python API example, on a free port and with a short wait."""
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    wait = "await asyncio." + "sleep(60)"  # the example keeps its daemon up for a minute; here, not at all
    assert "port=3000" in code and wait in code
    code = code.replace("port=3000", "port=0").replace(wait, "await asyncio.sleep(0)")
    code = code.replace('"examples/minimal.yaml"', repr(str(ROOT / "examples" / "minimal.yaml")))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    users = capsys.readouterr().out
    assert "'uid': '200000000000000002', 'username': 'bob', 'status': 'idle'" in users
