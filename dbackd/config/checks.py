"""Rules a schema cannot say that more than one part of the config shares: secrets and plain-text URLs.

Each adds a positioned Problem (or a note) for the data as read; nothing here builds the model.
"""
from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from dbackd.config.errors import Problem
from dbackd.config.source import Source


def check_secret(source: Source, path: tuple, value: Any, var: str, problems: list[Problem]) -> None:
    """A secret comes from the environment (or a credential), never from the file itself."""
    # Plain data given from Python has no file to leak from, so it may carry the secret.
    if not isinstance(value, str) or source.file == "<dict>":
        return
    if path not in source.from_env:
        problems.append(source.problem(path, f"a secret must not be written in the file: write "
                                             f"`{path[-1]}: ${{{var}}}` and set {var} in the environment"))
    elif path in source.env_defaulted:
        problems.append(source.problem(path, "the secret came from the default after `:-`, which is "
                                             "written in the file: drop the default and set the variable"))


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
