"""JSON text from outside (client frames, request bodies, Discord's answers) → Python values.

One parser with the guards every caller needs: invalid text and nesting deep enough to
exhaust the recursion limit both come back as "not JSON". Nothing here decides what a
value means.
"""
from __future__ import annotations

import json
from typing import Any, Union


class NotJson(ValueError):
    """The text is not JSON this process can read."""


def parse(text: Union[str, bytes, bytearray]) -> Any:
    """Parse JSON text; raises NotJson (with the parser's reason) for anything unreadable."""
    try:
        return json.loads(text)
    except RecursionError:
        raise NotJson("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise NotJson(str(exc)) from None


def parse_or_none(text: Union[str, bytes, bytearray]) -> Any:
    """The parsed value, or None for anything unreadable."""
    try:
        return parse(text)
    except NotJson:
        return None
