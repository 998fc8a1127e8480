"""Stand-in Discord ids for the placeholders of d-back's documentation (`user123`, `server1`,
`default_client_id`): d-back passed any id through, dbackd takes Discord ids only.

A text that is not a Discord id gets a number below 2**22 in its place. No Discord id is
that small (the top bits of a snowflake count milliseconds since 2015), so a stand-in
never meets a real id. The number comes from a hash of the text, so the same placeholder
gets the same stand-in in every run; a clash takes the next free number. The table goes
both ways: the program's callbacks are asked with its own ids again. It only maps ids;
it logs and awaits nothing. Thread-safe: big provider answers are repaired in a thread.
"""
from __future__ import annotations

import hashlib
import threading
from typing import Optional

SPACE = 2 ** 22  # stand-ins are 1 .. SPACE-1
MAX_TEXT = 100  # characters: longer texts are not ids of any kind
MAX_ENTRIES = 100_000  # placeholders remembered; a program past it gets no more stand-ins


class StandIns:
    def __init__(self) -> None:
        self._by_text: dict[str, str] = {}
        self._by_number: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_text)

    def get(self, text: str) -> Optional[str]:
        """The stand-in of `text` if it has one."""
        return self._by_text.get(text)

    def assign(self, text: str) -> Optional[str]:
        """The stand-in of `text`, made if need be; None for an empty or over-long text, or a full table."""
        if not text or len(text) > MAX_TEXT:
            return None
        found = self._by_text.get(text)
        if found is not None:
            return found
        with self._lock:
            found = self._by_text.get(text)
            if found is not None or len(self._by_text) >= MAX_ENTRIES:
                return found
            n = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
            n = n % (SPACE - 1) + 1
            while str(n) in self._by_number:
                n = n % (SPACE - 1) + 1
            number = str(n)
            self._by_number[number] = text
            self._by_text[text] = number
            return number

    def original(self, snowflake: str) -> str:
        """The program's own id for a Discord id handed out: the placeholder for a stand-in, else itself."""
        return self._by_number.get(snowflake, snowflake)
