"""Discord OAuth2 verification: whose login token this is, and whether the server's rules let them in.

Asks Discord's HTTP API (`GET /users/@me` with the person's token; `GET
/guilds/{guild}/members/{user}` with the bot token for the guild rules) or, for the mock
provider, the tokens written in the config. It fails closed: a Discord that is down,
slower than `timeout`, rate-limited past it, or answering nonsense means no. What Discord
said is cached per sha256 of the token for `cache_ttl`, and lookups that are already in
flight are shared, so a crowd of page reloads costs one request. A 429 is honoured: the
check waits out `Retry-After` when that fits in its `timeout` and otherwise fails at once,
and nothing is sent on that token again until the wait is over. Discord blocks an address
that gets too many 401, 403 and 429 answers (its invalid request limit: 10,000 in 10
minutes), after which no real login works: such answers are counted, and once half
that many were seen in the window new look-ups are paced (a few a second) rather than
refused, so even if every one were refused Discord's limit is never reached, and a real
login is slowed while an attack lasts, never locked out for the window; one that finds
no slot fails at once (`oauth.verified` says `rate_limited`, the metrics count it, and
/healthz shows the guard). A token Discord rejected is
remembered for a minute even with the cache off, so one bad token costs one request.

It answers yes or no and logs one `oauth.verified` event per check. It follows config
changes as `ConfigReplaced` events (answers learnt under other Discord settings are
forgotten). It never writes to a socket, never changes the world, and never logs or
keeps a token in clear (cache keys and rate-limit keys hold the sha256 only).
"""
from __future__ import annotations

import asyncio
import enum
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable, Mapping, Optional, Union

import aiohttp
import structlog
from cachetools import TLRUCache

from dbackd.version import __version__
from dbackd.core import jsontext, tokens
from dbackd.edge.bodies import read_limited
from dbackd.config import Config, OAuth, Server
from dbackd.config.values import is_snowflake
from dbackd.core.events import ConfigReplaced, Event
from dbackd.core.tasks import Flights
from dbackd.core.world import World

log = structlog.get_logger("dbackd.oauth")

MAX_ENTRIES = 10_000  # bound on cached answers and on remembered rate limits
# Distinct look-ups waiting on Discord at once; more fail at once. A safety net only: each
# socket has at most one check running, and requests queue for the HTTP session's pool of
# 100 connections within their own timeout, so a burst of reconnects is served, not refused.
MAX_IN_FLIGHT = 4096
_MAX_BODY = 64 * 1024  # Discord's answers here are a few hundred bytes
_MAX_ATTEMPTS = 3  # requests per lookup, counting retries after a 429
_MAX_RETRY_AFTER = 3600.0
_DEFAULT_RETRY_AFTER = 1.0  # a 429 that does not say how long
_USER_AGENT = f"DiscordBot (dbackd, {__version__})"  # the form Discord asks of API clients
FAILED_TTL = 60.0  # seconds a token Discord rejected is remembered, whatever cache_ttl says
INVALID_WINDOW = 600.0  # Discord's invalid request limit counts 401, 403 and 429 answers over 10 minutes...
INVALID_BUDGET = 5000  # ...and blocks past 10,000; dbackd paces its look-ups from half that on:
PACE = 5.0  # look-ups a second past the budget: 5,000 + 5 × 600 s + PACE_BURST stays under 10,000
PACE_BURST = 20
_INVALID = (401, 403, 429)

# RFC 6750 token68; anything else could not be sent in a header, so it is no token.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{1,512}=*")
_UNKNOWN_GUILD = 10004  # Discord's JSON error code: the bot cannot see the guild


class Outcome(str, enum.Enum):
    """How one check ended; a small fixed set, logged as `outcome`."""

    ALLOWED = "allowed"
    DENIED = "denied"  # a real login that no access rule lets in (or the server has no rule)
    INVALID_TOKEN = "invalid_token"  # Discord (or the mock list) does not know the token
    MISMATCH = "mismatch"  # the claimed discordUser is not the token's user
    DISCORD_ERROR = "discord_error"  # unreachable, an error status, or an answer that makes no sense
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class Identity:
    id: str
    username: str


@dataclass(frozen=True)
class Membership:
    member: bool
    roles: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Failure:
    outcome: Outcome
    status: Optional[int] = None  # Discord's HTTP status, when it answered
    error: Optional[str] = None  # a short reason for the log; never a token

    @property
    def cacheable(self) -> bool:
        # A token Discord rejected stays rejected; every other failure may pass.
        return self.outcome is Outcome.INVALID_TOKEN


Result = Union[Identity, Membership, Failure]


@dataclass
class _Check:
    """What one verification learnt, for its log line."""

    requested: bool = False  # this check sent a request of its own
    reused: bool = False  # this check took an answer from the cache or from a shared look-up
    failure: Optional[Failure] = None
    user: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


class InvalidRequestGuard:
    """Counts Discord's 401, 403 and 429 answers over a sliding window; once `budget` were
    seen, lets new look-ups through at `pace` a second (a bucket of `burst`) and no faster."""

    def __init__(self, budget: int = INVALID_BUDGET, window: float = INVALID_WINDOW,
                 clock: Callable[[], float] = time.monotonic, pace: float = PACE, burst: int = PACE_BURST):
        self.budget = budget
        self.window = window
        self.clock = clock
        self.pace = pace
        self.burst = burst
        self.invalid = 0  # such answers seen, ever
        self.paced = 0  # requests sent past the budget, at the pace
        self.refused = 0  # requests not sent: past the budget and no slot free
        self._seen: deque[float] = deque()  # when each answer in the window came
        self._slots: Optional[float] = None  # free slots past the budget (None: the budget is not spent)
        self._slots_at = 0.0

    def _over(self, now: float) -> bool:
        seen = self._seen
        while seen and now - seen[0] >= self.window:
            seen.popleft()
        if len(seen) < self.budget:
            self._slots = None
            return False
        return True

    def allows(self) -> bool:
        now = self.clock()
        if not self._over(now):
            return True
        if self._slots is None:
            self._slots, self._slots_at = float(self.burst), now
        self._slots = min(float(self.burst), self._slots + (now - self._slots_at) * self.pace)
        self._slots_at = now
        if self._slots >= 1.0:
            self._slots -= 1.0
            self.paced += 1
            return True
        self.refused += 1
        return False

    def status(self) -> dict[str, Any]:
        return {"state": "paced" if self._over(self.clock()) else "open", "invalid_recent": len(self._seen),
                "budget": self.budget, "pace_per_second": self.pace, "paced": self.paced, "refused": self.refused}

    def record(self, status: int) -> bool:
        """Note an answer; True if it counts against the limit."""
        if status not in _INVALID:
            return False
        self.invalid += 1
        self._seen.append(self.clock())
        return True

    @property
    def recent(self) -> int:
        """Such answers within the window (at the last look)."""
        return len(self._seen)


class OAuthService:
    """Verifies Discord logins for the access check; owns the HTTP session, the cache and the lookups in flight."""

    def __init__(self, world: World, clock: Callable[[], float] = time.monotonic,
                 on_verified: Optional[Callable[[str, float], None]] = None,
                 guard: Optional[InvalidRequestGuard] = None,
                 on_guard: Optional[Callable[[str], None]] = None):
        # `clock` times the cache only (tests move it); deadlines and rate limits use real time.
        self.clock = clock
        self.on_verified = on_verified  # (outcome, seconds) for each check, e.g. for metrics
        self.guard = guard or InvalidRequestGuard()
        self.on_guard = on_guard  # "invalid" (an answer that counts) or "refused" (not sent), e.g. for metrics
        self.requests = 0  # requests sent to Discord
        self._settings = self._oauth_settings(world.config)
        self._cache: TLRUCache = TLRUCache(MAX_ENTRIES, ttu=lambda _k, v, now: now + v[1], timer=lambda: self.clock())
        self._blocked: TLRUCache = TLRUCache(MAX_ENTRIES, ttu=lambda _k, until, _now: until, timer=time.monotonic)
        self._inflight = Flights()
        self._http: Optional[aiohttp.ClientSession] = None
        self._stopped = False
        world.subscribe(self._on_event)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self._stopped = False
        self._session()

    async def stop(self) -> None:
        self._stopped = True
        await self._inflight.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _on_event(self, event: Event) -> None:
        """After a reload: answers learnt under other Discord settings are forgotten."""
        if isinstance(event, ConfigReplaced):
            settings = self._oauth_settings(event.config)
            if settings != self._settings:
                self._cache.clear()
            self._settings = settings

    @property
    def session_open(self) -> bool:
        """True while the HTTP session to Discord is open (from start to stop)."""
        return self._http is not None and not self._http.closed

    @property
    def cached(self) -> int:
        """How many answers are remembered."""
        return len(self._cache)

    def status(self) -> dict[str, Any]:
        """For /healthz: the invalid-request guard (open, or pacing look-ups) and the answers remembered."""
        return {"discord_guard": self.guard.status(), "cached": self.cached}

    @staticmethod
    def _oauth_settings(config: Config) -> frozenset[OAuth]:
        return frozenset(s.oauth for s in config.servers)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers={"User-Agent": _USER_AGENT}, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    # -- the check -----------------------------------------------------------------
    async def verify(self, server: Server, token: str, claimed: Mapping[str, Any]) -> bool:
        """True when `token` belongs to the claimed user and the server's access rules let them in."""
        started = time.monotonic()
        check = _Check()
        try:
            outcome = await asyncio.wait_for(self._decide(server, token, claimed, started, check),
                                             server.oauth.timeout)
        except asyncio.TimeoutError:
            outcome = Outcome.TIMEOUT
        except Exception as exc:  # fail closed: nothing here may break the socket or the daemon
            outcome = Outcome.DISCORD_ERROR
            check.extra["error"] = type(exc).__name__
        failure = check.failure
        fields: dict[str, Any] = {
            "server": server.id, "outcome": outcome.value, "provider": server.oauth.provider,
            "user": check.user, "cached": check.reused and not check.requested,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        }
        if failure is not None and failure.status is not None:
            fields["status"] = failure.status
        if failure is not None and failure.error is not None:
            fields["error"] = failure.error
        fields.update(check.extra)
        quiet = outcome in (Outcome.ALLOWED, Outcome.DENIED, Outcome.INVALID_TOKEN, Outcome.MISMATCH)
        (log.info if quiet else log.warning)("oauth.verified", **fields)
        if self.on_verified is not None:
            self.on_verified(outcome.value, time.monotonic() - started)
        return outcome is Outcome.ALLOWED

    async def _decide(self, server: Server, token: str, claimed: Mapping[str, Any], started: float,
                      check: _Check) -> Outcome:
        rules, oauth = server.access, server.oauth
        if not rules.any:
            return Outcome.DENIED  # no rule lets anyone in: Discord need not be asked
        claimed_id = claimed.get("id")
        if not is_snowflake(claimed_id):
            return Outcome.MISMATCH
        if not _TOKEN.fullmatch(token):
            return Outcome.INVALID_TOKEN
        if self._stopped:
            check.failure = Failure(Outcome.DISCORD_ERROR, error="stopped")
            return Outcome.DISCORD_ERROR
        deadline = started + oauth.timeout
        if oauth.provider == "mock":
            identity: Result = _mock_identity(oauth, token)
        else:
            identity = await self._identity(oauth, token, deadline, check)
        if isinstance(identity, Failure):
            check.failure = identity
            return identity.outcome
        assert isinstance(identity, Identity)
        check.user = identity.id
        if identity.id != claimed_id:
            check.extra["claimed"] = claimed_id
            return Outcome.MISMATCH
        if rules.any_discord_user or identity.id in rules.users:
            return Outcome.ALLOWED
        if rules.needs_member and oauth.bot_token:
            membership = await self._membership(oauth, server.snowflake, identity.id, deadline, check)
            if isinstance(membership, Failure):
                check.failure = membership
                return membership.outcome
            assert isinstance(membership, Membership)
            if membership.member and (rules.guild_members or not membership.roles.isdisjoint(rules.roles)):
                return Outcome.ALLOWED
        return Outcome.DENIED

    # -- what Discord says ---------------------------------------------------------
    async def _identity(self, oauth: OAuth, token: str, deadline: float, check: _Check) -> Result:
        digest = tokens.digest(token)

        async def fetch(deadline: float) -> Result:
            answer = await self._get(f"{oauth.api_base}/users/@me", {"Authorization": f"Bearer {token}"},
                                     ("bearer", oauth.api_base, digest), deadline)
            if isinstance(answer, Failure):
                return answer
            status, body = answer
            if status in (401, 403):
                return Failure(Outcome.INVALID_TOKEN, status)
            if status != 200:
                return Failure(Outcome.DISCORD_ERROR, status)
            data = jsontext.parse_or_none(body)
            if not isinstance(data, dict) or not is_snowflake(data.get("id")) \
                    or not isinstance(data.get("username"), str):
                return Failure(Outcome.DISCORD_ERROR, status, "unexpected answer")
            return Identity(data["id"], data["username"])

        return await self._shared(("user", oauth.api_base, digest), oauth.cache_ttl, deadline, fetch, check)

    async def _membership(self, oauth: OAuth, guild: str, user: str, deadline: float, check: _Check) -> Result:
        bot_token = oauth.bot_token or ""

        async def fetch(deadline: float) -> Result:
            answer = await self._get(f"{oauth.api_base}/guilds/{guild}/members/{user}",
                                     {"Authorization": f"Bot {bot_token}"},
                                     ("bot", oauth.api_base, tokens.digest(bot_token)), deadline)
            if isinstance(answer, Failure):
                return answer
            status, body = answer
            data = jsontext.parse_or_none(body)
            if status == 404:
                if isinstance(data, dict) and data.get("code") == _UNKNOWN_GUILD:
                    return Failure(Outcome.DISCORD_ERROR, status, "the bot cannot see the guild")
                return Membership(False)
            if status != 200:
                # 401/403: the bot token is wrong or the bot is not in the guild.
                return Failure(Outcome.DISCORD_ERROR, status)
            roles = data.get("roles") if isinstance(data, dict) else None
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                return Failure(Outcome.DISCORD_ERROR, status, "unexpected answer")
            return Membership(True, frozenset(roles))

        return await self._shared(("member", oauth.api_base, guild, user), oauth.cache_ttl, deadline, fetch, check)

    async def _shared(self, key: Hashable, ttl: float, deadline: float,
                      fetch: Callable[[float], Awaitable[Result]], check: _Check) -> Result:
        """A cached answer, or the lookup already in flight for the same key, or a new one."""
        hit = self._cache.get(key)
        if hit is not None:
            check.reused = True
            return hit[0]
        task = self._inflight.get(key)
        if task is not None:
            check.reused = True
        else:
            if len(self._inflight) >= MAX_IN_FLIGHT:
                return Failure(Outcome.RATE_LIMITED, error="too many checks at once")
            check.requested = True
            task = self._inflight.start(key, self._fetch_and_keep(key, ttl, deadline, fetch))
        try:
            # shield: one check giving up (its socket closed, its own deadline) leaves the others theirs.
            return await asyncio.wait_for(asyncio.shield(task), max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            return Failure(Outcome.TIMEOUT)
        except asyncio.CancelledError:
            if task.cancelled():  # the service stopped under the lookup; this check was not cancelled
                return Failure(Outcome.DISCORD_ERROR, error="stopped")
            raise

    async def _fetch_and_keep(self, key: Hashable, ttl: float, deadline: float,
                              fetch: Callable[[float], Awaitable[Result]]) -> Result:
        """Run one lookup within its deadline; never raises (a shared task nobody awaits must not)."""
        try:
            result = await asyncio.wait_for(fetch(deadline), max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            return Failure(Outcome.TIMEOUT)
        except Exception as exc:
            return Failure(Outcome.DISCORD_ERROR, error=type(exc).__name__)
        if isinstance(result, Failure):
            if result.cacheable:
                self._cache[key] = (result, FAILED_TTL)
        elif ttl > 0:
            self._cache[key] = (result, ttl)
        return result

    async def _get(self, url: str, headers: dict[str, str], gate: Hashable,
                   deadline: float) -> Union[tuple[int, bytes], Failure]:
        """GET within the deadline, honouring 429 Retry-After for requests made with the same credential."""
        for _ in range(_MAX_ATTEMPTS):
            now = time.monotonic()
            until = self._blocked.get(gate)
            if until is not None and until > now:
                if until >= deadline:
                    return Failure(Outcome.RATE_LIMITED, error="retry-after exceeds the timeout")
                await asyncio.sleep(until - now)
                now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return Failure(Outcome.TIMEOUT)
            if not self.guard.allows():
                self._report("refused")
                return Failure(Outcome.RATE_LIMITED, error="too many invalid requests to Discord lately")
            self.requests += 1
            try:
                async with self._session().get(url, headers=headers, allow_redirects=False,
                                               timeout=aiohttp.ClientTimeout(total=remaining)) as resp:
                    body = await read_limited(resp.content, _MAX_BODY, resp.content_length)
                    if self.guard.record(resp.status):
                        self._report("invalid")
                    if resp.status != 429:
                        return resp.status, body
                    self._blocked[gate] = time.monotonic() + _retry_after(resp.headers, body)
            except asyncio.TimeoutError:
                return Failure(Outcome.TIMEOUT)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                return Failure(Outcome.DISCORD_ERROR, error=type(exc).__name__)
        return Failure(Outcome.RATE_LIMITED, 429)


    def _report(self, kind: str) -> None:
        if self.on_guard is not None:
            self.on_guard(kind)


def _mock_identity(oauth: OAuth, token: str) -> Result:
    user = tokens.find(tokens.digest(token), ((tokens.digest(known), u) for known, u in oauth.tokens))
    return Identity(user.id, user.username) if user is not None else Failure(Outcome.INVALID_TOKEN)


def _retry_after(headers: Mapping[str, str], body: bytes) -> float:
    """Seconds to wait after a 429: the Retry-After header, else the body's retry_after."""
    value: Any = headers.get("Retry-After")
    if value is None:
        data = jsontext.parse_or_none(body)
        value = data.get("retry_after") if isinstance(data, dict) else None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return _DEFAULT_RETRY_AFTER
    if seconds != seconds:  # NaN
        return _DEFAULT_RETRY_AFTER
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)
