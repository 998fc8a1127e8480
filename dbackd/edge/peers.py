"""Client addresses, and what one address may hold at once: connections, socket opens and Discord login checks.

A client's address is its TCP peer's, or, when the peer is one of `listen.trusted_proxies`,
the nearest address in its X-Forwarded-For that is not a trusted proxy itself (any other
peer's header is ignored: anyone can write one). Direct connections are counted by peer
at accept (door.py); connections through a trusted proxy are counted by forwarded
address when they become sockets. Limits are read from the world's config at each use,
so a reload applies at once. What is counted per address is keyed by `address_key`: an
IPv4 address, or an IPv6 address's /64 (one subscriber's usual share, so one line is not
2^64 addresses). It counts and answers yes or no; it never closes or sends anything, and
it keeps no more than a bounded number of addresses.
"""
from __future__ import annotations

import ipaddress
import time
from collections import Counter
from functools import lru_cache
from typing import Callable, Optional

from cachetools import TTLCache

from dbackd.config import Listen
from dbackd.core.rates import Bucket
from dbackd.core.world import World

MAX_TRACKED = 65536  # addresses whose login-check rate is remembered (the oldest are forgotten first)
FULL = "full"  # refusal reasons, for logs and metrics
ADDRESS_FULL = "address_full"


@lru_cache(maxsize=4096)
def address_key(address: str) -> str:
    """What per-address limits count by: an IPv4 address, an IPv6 address's /64, or the text
    itself when it is no address (a proxy's odd header)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_address(listen: Listen, peer: Optional[str], forwarded: Optional[str]) -> Optional[str]:
    """Who the client is: the peer, or what a trusted proxy says the peer forwarded for."""
    if not forwarded or not listen.trusts(peer):
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):  # the right end was written by the nearest (trusted) proxy
        if not listen.trusts(hop):
            return hop[:64]  # a client's own text: keep what is stored of it small
    return hops[0][:64] if hops else peer


class Peers:
    def __init__(self, world: World, clock: Callable[[], float] = time.monotonic):
        self.world = world
        self.clock = clock
        self.capacity: Optional[int] = None  # what the file-descriptor limit leaves room for, once known
        self.total = 0  # open connections
        self.per_address: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # by reason
        self._checks: Counter[str] = Counter()  # login checks running, per address
        self._check_rate: TTLCache = TTLCache(MAX_TRACKED, ttl=60.0, timer=lambda: self.clock())
        self._socket_rate: TTLCache = TTLCache(MAX_TRACKED, ttl=60.0, timer=lambda: self.clock())

    # -- connections -----------------------------------------------------------------
    def admit(self, address: Optional[str], count_address: bool = True, operator: bool = False) -> Optional[str]:
        """Count a new connection, or say why not (FULL, ADDRESS_FULL). `count_address`:
        False for a trusted proxy's connection, whose clients are counted one by one later;
        `operator`: the peer may take the last `limits.reserved_connections` too."""
        limits = self.world.config.limits
        capacity = limits.max_connections if self.capacity is None else min(limits.max_connections, self.capacity)
        address = None if address is None else address_key(address)
        if not operator:
            capacity = max(0, capacity - limits.reserved_connections)
        if count_address and address is not None and self.per_address[address] >= limits.max_connections_per_address:
            self.refused[ADDRESS_FULL] += 1
            return ADDRESS_FULL
        if self.total >= capacity:
            self.refused[FULL] += 1
            return FULL
        self.total += 1
        if count_address and address is not None:
            self.per_address[address] += 1
        return None

    def release(self, address: Optional[str], count_address: bool = True) -> None:
        self.total -= 1
        if count_address and address is not None:
            self._uncount(self.per_address, address_key(address))

    def admit_forwarded(self, address: Optional[str]) -> Optional[str]:
        """A socket through a trusted proxy: counted by the address it was forwarded for
        (the proxy's connection itself was counted in the total at accept)."""
        if address is None:
            return None
        address = address_key(address)
        if self.per_address[address] >= self.world.config.limits.max_connections_per_address:
            self.refused[ADDRESS_FULL] += 1
            return ADDRESS_FULL
        self.per_address[address] += 1
        return None

    def release_forwarded(self, address: Optional[str]) -> None:
        if address is not None:
            self._uncount(self.per_address, address_key(address))

    def may_open_socket(self, address: Optional[str]) -> bool:
        """True if the address may open one more socket now (`limits.sockets_per_second`)."""
        limits = self.world.config.limits
        return self._take(self._socket_rate, address_key(address or ""), limits.sockets_per_second,
                          limits.sockets_burst)

    # -- login checks ----------------------------------------------------------------
    def begin_check(self, address: Optional[str]) -> bool:
        """True if the address may start one more Discord login check now; end it with end_check."""
        key = address_key(address or "")
        limits = self.world.config.limits
        if self._checks[key] >= limits.oauth_checks_per_address:
            return False
        per_minute = limits.oauth_checks_per_minute
        if not self._take(self._check_rate, key, per_minute / 60.0, per_minute):
            return False
        self._checks[key] += 1
        return True

    def _take(self, buckets: TTLCache, key: str, rate: float, burst: int) -> bool:
        """One token from the address's bucket; False when it has none left."""
        now = self.clock()
        bucket = buckets.get(key)
        if bucket is None:
            bucket = Bucket(burst, now)
        over = bucket.take(now, rate, burst)
        buckets[key] = bucket  # stored again: an address that keeps asking stays remembered
        return not over

    def end_check(self, address: Optional[str]) -> None:
        self._uncount(self._checks, address_key(address or ""))

    @staticmethod
    def _uncount(counter: Counter, key: str) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]
