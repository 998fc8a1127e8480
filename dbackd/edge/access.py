"""Who may join a passworded server: the legacy password and, through one verifier, a Discord login.

Answers a yes/no with the protocol's reason. The verifier (OAuth2 against Discord, or
the host program's validator) is given at construction, and so is the count of login
checks per client address (peers.py): an address past its share gets a no without the
verifier being asked. It never sends anything and never logs a password or token.
"""
from __future__ import annotations

import enum
import hmac
from typing import Awaitable, Callable, Optional

from dbackd.config import Server
from dbackd.edge.peers import Peers
from dbackd.fanout.protocol import Connect


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    AUTH_FAILED = "auth_failed"  # OAuth credentials were given and rejected
    AUTH_REQUIRED = "auth_required"  # nothing valid was given
    THROTTLED = "throttled"  # the client's address has too many login checks running or this minute


# (server, token, claimed user) -> True when the token proves access to the server.
LoginVerifier = Callable[[Server, str, dict], Awaitable[bool]]


class Access:
    def __init__(self, verify_login: LoginVerifier, peers: Optional[Peers] = None):
        self.verify_login = verify_login
        self.peers = peers

    async def check(self, server: Server, request: Connect, address: Optional[str] = None) -> Verdict:
        if not server.passworded:
            return Verdict.ALLOWED
        if request.password is not None and server.password is not None and hmac.compare_digest(
            request.password.encode("utf-8", "surrogatepass"), server.password.encode("utf-8", "surrogatepass")
        ):
            return Verdict.ALLOWED
        if request.discord_token is not None and request.discord_user is not None:
            peers = self.peers
            if peers is not None and not peers.begin_check(address):
                return Verdict.THROTTLED
            try:
                ok = await self.verify_login(server, request.discord_token, dict(request.discord_user))
            finally:
                if peers is not None:
                    peers.end_check(address)
            return Verdict.ALLOWED if ok else Verdict.AUTH_FAILED
        return Verdict.AUTH_REQUIRED
