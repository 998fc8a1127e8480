"""Who may join a passworded server: the legacy password and, through a verifier, Discord OAuth2.

Answers a yes/no with the protocol's reason. It never sends anything and never logs
a password or token.
"""
from __future__ import annotations

import enum
import hmac
from typing import Awaitable, Callable, Optional

from .config import Server
from .protocol import Connect


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    AUTH_FAILED = "auth_failed"  # OAuth credentials were given and rejected
    AUTH_REQUIRED = "auth_required"  # nothing valid was given


# (server, token, claimed user) -> True when the token proves access to the server.
OAuthVerifier = Callable[[Server, str, dict], Awaitable[bool]]


async def _refuse_oauth(server: Server, token: str, claimed: dict) -> bool:
    return False


class Access:
    def __init__(self, verify_oauth: Optional[OAuthVerifier] = None):
        self.verify_oauth = verify_oauth or _refuse_oauth
        # A host program's validator (Daemon.on_validate_discord_user): when set, it decides.
        self.validator: Optional[OAuthVerifier] = None

    async def check(self, server: Server, request: Connect) -> Verdict:
        if not server.passworded:
            return Verdict.ALLOWED
        if request.password is not None and server.password is not None and hmac.compare_digest(
            request.password.encode("utf-8"), server.password.encode("utf-8")
        ):
            return Verdict.ALLOWED
        if request.discord_token is not None and request.discord_user is not None:
            verify = self.validator or self.verify_oauth
            ok = await verify(server, request.discord_token, dict(request.discord_user))
            return Verdict.ALLOWED if ok else Verdict.AUTH_FAILED
        return Verdict.AUTH_REQUIRED
