"""Secrets compared and remembered without being kept: digests and constant-time lookups.

The one place tokens are hashed (cache and rate-limit keys hold the digest only) and
matched against a list (every entry compared, so timing says nothing about which one,
or whether any, matched). It never logs or stores a token in clear.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Iterable, Optional, TypeVar

T = TypeVar("T")


def digest(token: str) -> bytes:
    """SHA-256 of a token: fixed length, so comparisons do not depend on the tokens' lengths."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def find(presented: bytes, known: Iterable[tuple[bytes, T]]) -> Optional[T]:
    """The value of the entry whose digest equals `presented`, comparing every entry in constant time."""
    match: Optional[T] = None
    for candidate, value in known:
        if hmac.compare_digest(presented, candidate):
            match = value
    return match
