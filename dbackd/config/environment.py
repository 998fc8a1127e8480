"""Where `${VAR}` values come from: the process environment, then systemd credentials.

Under systemd, `LoadCredential=NAME:/path` puts a secret in a file NAME inside
$CREDENTIALS_DIRECTORY; `${NAME}` in the YAML reads it when no environment variable
of that name is set. A credential file (UTF-8 text) is read only when its name is asked for, and
one trailing newline is dropped (files written with `echo` have one). This module
only looks values up; it never logs or keeps them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Mapping, Optional

# Same shape as the names ${...} accepts: no separators, so no way out of the directory.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Environment(Mapping[str, str]):
    """A read-only view: environment variables first, credential files second."""

    def __init__(self, env: Optional[Mapping[str, str]] = None, credentials: Optional[str] = None):
        self.env = os.environ if env is None else env
        directory = credentials if credentials is not None else self.env.get("CREDENTIALS_DIRECTORY")
        self.credentials = Path(directory) if directory else None

    def __getitem__(self, name: str) -> str:
        if name in self.env:
            return self.env[name]
        value = self._credential(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.env or self._credential(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)

    def _credential(self, name: str) -> Optional[str]:
        if self.credentials is None or not _NAME.match(name):
            return None
        try:
            text = (self.credentials / name).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):  # absent, unreadable or not text: as if unset
            return None
        return text[:-1] if text.endswith("\n") else text
