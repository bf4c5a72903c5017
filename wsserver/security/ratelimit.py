"""Brute-force protection: a token bucket of FAILED authentication attempts per client.

Each client address (IPv6: its /64, or the configured prefix, since one host commonly owns a
whole /64) starts with ``burst`` tokens; every failed attempt takes one and they come back at
``refill_per_minute``. With no token left, attempts are refused (429) without checking the
credentials, and the answer says when to retry. Successful attempts cost nothing.

Memory is bounded: at most ``max_clients`` buckets, least recently used forgotten first, and a
bucket that has filled up again is dropped since it is the same as none.
Not thread-safe: one instance per port per process, used from the process's hub. Under the
pre-forking master the workers use the shared table of ``ratelimit_shared`` instead, so the
limit holds for the server rather than for each worker.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wsserver.config.schema import AuthRateLimitConfig

__all__ = ["FailureLimiter", "client_key"]


def client_key(address: str, ipv6_prefix: int = 64) -> str:
    """Whose bucket an address uses: an IPv4 address, or an IPv6 address's prefix network."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip)


class Limiter(Protocol):
    """What the authenticator asks of a failure limiter: this worker's (FailureLimiter) or the
    table all workers share (ratelimit_shared.SharedFailureTable)."""

    def retry_after(self, address: str) -> int | None: ...

    def failed(self, address: str) -> None: ...


class FailureLimiter:
    def __init__(
        self,
        burst: int,
        refill_per_minute: float,
        max_clients: int = 100_000,
        ipv6_prefix: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = refill_per_minute / 60.0  # tokens per second
        self.max_clients = max_clients
        self.ipv6_prefix = ipv6_prefix
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    @classmethod
    def from_config(
        cls, cfg: AuthRateLimitConfig, clock: Callable[[], float] = time.monotonic
    ) -> FailureLimiter | None:
        """None when ``burst = 0`` (no limit)."""
        if cfg.burst == 0:
            return None
        return cls(cfg.burst, cfg.refill_per_minute, cfg.max_clients, cfg.ipv6_prefix, clock)

    def __len__(self) -> int:
        return len(self._buckets)

    def key(self, address: str) -> str:
        return client_key(address, self.ipv6_prefix)

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.burst)
        tokens, at = entry
        return min(float(self.burst), tokens + max(0.0, now - at) * self.rate)

    def retry_after(self, address: str) -> int | None:
        """None if this client may try now; else whole seconds until it may (>= 1)."""
        key = self.key(address)
        if key not in self._buckets:
            return None
        now = self.clock()
        tokens = self._tokens(key, now)
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def failed(self, address: str) -> None:
        """Take one token for a failed attempt."""
        key = self.key(address)
        now = self.clock()
        tokens = max(0.0, self._tokens(key, now) - 1.0)
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        self._prune(now)

    def _prune(self, now: float) -> None:
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        # Drop a few refilled buckets from the old end on each call: amortized, bounded work.
        for _ in range(4):
            if not self._buckets:
                break
            key = next(iter(self._buckets))
            if self._tokens(key, now) < self.burst:
                break
            del self._buckets[key]
