"""``[ports.auth_rate_limit]`` for the whole server: failure buckets in memory all workers share.

The per-process :class:`~wsserver.security.ratelimit.FailureLimiter` lets N workers grant an
address N times ``burst`` failed attempts. Here the buckets live in a table the master maps before it
forks, so every worker of every generation that runs the same port settings sees the same counts.

Layout (one table per port and its limit settings), a set-associative cache:

- ``max_clients`` slots rounded up to whole sets of :data:`WAYS` slots; a client key (its address,
  IPv6 per prefix) hashes, with a salt drawn by the master, to one set and lives in one of its
  slots or nowhere. Memory: :data:`SLOT_BYTES` bytes a slot (100 000 clients ~ 2.4 MB).
- the keys region (``uint64`` hash per slot, 0 = empty), then the state region (``float64``
  tokens and the monotonic time of the last failure, per slot). ``CLOCK_MONOTONIC`` is one clock
  for all processes of the machine.

Locking: one POSIX record lock (``lockf``) per set, a byte of the table's file. The kernel drops
a process's record locks when it dies, so a worker killed (-9) while holding one frees it at
once. A lock that cannot be had within :data:`LOCK_TIMEOUT` seconds (a holder stopped by
SIGSTOP until the master's heartbeat check kills it) is done without: the update may then be
lost, the limiter never wedges. A worker killed halfway through writing a slot leaves at worst
one client's bucket wrong; every read clamps tokens to ``[0, burst]`` and takes a last failure
in the future (or NaN) as no bucket, so no value in the table can refuse anyone for longer than
a refill. (Under the lock a last failure is never later than the reader's clock.)

Costs: ``retry_after`` (every attempt) reads the set's eight keys without a lock and returns at
once when the client has no bucket, the common case for honest clients; only a client with a
bucket takes its set's lock. ``failed`` takes the lock and writes one slot.

A full set makes room by forgetting a bucket that has filled up again (the same as none), else
the one whose last failure is oldest. The salt makes set choice unpredictable, so to push one
client's bucket out an attacker must fail from about ``max_clients`` other addresses in between;
an attacker with that many addresses has that many buckets anyway. A full table never stops
counting new failures.

Posix record locks belong to a process, not a thread: the table is used from a worker's hub
only (``Authenticator.gate`` and ``finish`` run there).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import math
import mmap
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from wsserver.logs import log
from wsserver.security.ratelimit import client_key

if TYPE_CHECKING:
    from wsserver.config import Config, PortConfig

__all__ = ["LOCK_TIMEOUT", "SLOT_BYTES", "WAYS", "SharedAuthLimits", "SharedFailureTable", "settings_key"]

logger = logging.getLogger("wsserver.auth")

WAYS = 8  # slots per set: a client's bucket is in one of these or nowhere
SLOT_BYTES = 24  # key hash (8) + tokens (8) + last failure (8)
LOCK_TIMEOUT = 0.05  # seconds to wait for a set's lock before going on without it
_BUSY = (errno.EACCES, errno.EAGAIN)


def settings_key(port: PortConfig) -> tuple[Any, ...]:
    """What makes two generations' buckets of a port the same buckets."""
    cfg = port.auth_rate_limit
    return (port.alias, cfg.burst, float(cfg.refill_per_minute), cfg.max_clients, cfg.ipv6_prefix)


def _shared_file(size: int) -> int:
    """A file descriptor of ``size`` zero bytes in memory (no disk write-back), never named."""
    try:
        fd = os.memfd_create("wsserver-auth-limits", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        with tempfile.TemporaryFile(prefix="wsserver-auth-limits-") as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, size)
    return fd


class SharedFailureTable:
    """One port's failure buckets, shared by every process that maps them (see the module doc).

    Same interface as :class:`~wsserver.security.ratelimit.FailureLimiter`.
    """

    def __init__(
        self,
        burst: int,
        refill_per_minute: float,
        max_clients: int = 100_000,
        ipv6_prefix: int = 64,
        clock: Callable[[], float] = time.monotonic,
        lock_timeout: float = LOCK_TIMEOUT,
        _share: SharedFailureTable | None = None,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1 (0 means no limiter at all)")
        self.burst = burst
        self.rate = refill_per_minute / 60.0  # tokens per second
        self.max_clients = max_clients
        self.ipv6_prefix = ipv6_prefix
        self.clock = clock
        self.lock_timeout = lock_timeout
        self.sets = max(1, math.ceil(max_clients / WAYS))
        self.slots = self.sets * WAYS
        self.evictions = 0  # this process's, for tests and diagnosis
        self.unlocked = 0  # updates done without the lock (a holder did not let go in time)
        if _share is None:
            self._fd = _shared_file(self.slots * SLOT_BYTES)
            self._owner = True
            self._salt = os.urandom(16)
            self._mem = mmap.mmap(self._fd, self.slots * SLOT_BYTES)  # MAP_SHARED: the same pages after fork
        else:
            self._fd, self._owner, self._salt, self._mem = _share._fd, False, _share._salt, _share._mem
        self._keys = memoryview(self._mem)[: 8 * self.slots].cast("Q")
        self._state = memoryview(self._mem)[8 * self.slots :].cast("d")  # tokens, at; per slot

    @property
    def memory_bytes(self) -> int:
        return self.slots * SLOT_BYTES

    def attach(self, clock: Callable[[], float] | None = None) -> SharedFailureTable:
        """Another view of the same memory (tests: what a second worker sees)."""
        return SharedFailureTable(
            self.burst,
            self.rate * 60.0,
            self.max_clients,
            self.ipv6_prefix,
            clock or self.clock,
            self.lock_timeout,
            _share=self,
        )

    def close(self) -> None:
        """The master lets go of a table no generation it forks uses; mappings in workers stay."""
        self._keys.release()
        self._state.release()
        if self._owner:
            self._mem.close()
            os.close(self._fd)

    def __len__(self) -> int:
        """Buckets that still count something (not filled up again)."""
        now = self.clock()
        return sum(1 for i in range(self.slots) if self._keys[i] and self._tokens(i, now) < self.burst)

    # ---- keys ------------------------------------------------------------------------------
    def key(self, address: str) -> str:
        return client_key(address, self.ipv6_prefix)

    def _hash(self, address: str) -> int:
        digest = hashlib.blake2b(self.key(address).encode(), digest_size=8, key=self._salt).digest()
        return int.from_bytes(digest, "little") or 1  # 0 marks an empty slot

    def _find(self, h: int, base: int) -> int | None:
        ways = self._keys[base : base + WAYS].tolist()
        return base + ways.index(h) if h in ways else None

    # ---- buckets ---------------------------------------------------------------------------
    def _tokens(self, slot: int, now: float) -> float:
        tokens, at = self._state[2 * slot], self._state[2 * slot + 1]
        if not at <= now + 1.0:  # NaN or far in the future: a write cut short; the bucket is void
            return float(self.burst)
        if not tokens >= 0.0:  # negative or NaN
            tokens = 0.0
        return min(float(self.burst), tokens + max(0.0, now - at) * self.rate)

    def retry_after(self, address: str) -> int | None:
        """None if this client may try now; else whole seconds until it may (>= 1)."""
        h = self._hash(address)
        base = (h % self.sets) * WAYS
        if self._find(h, base) is None:  # no bucket: nothing to lock for
            return None
        with self._locked(base // WAYS):
            slot = self._find(h, base)  # it may have been evicted meanwhile
            if slot is None:
                return None
            tokens = self._tokens(slot, self.clock())
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def failed(self, address: str) -> None:
        """Take one token for a failed attempt."""
        h = self._hash(address)
        base = (h % self.sets) * WAYS
        with self._locked(base // WAYS):
            now = self.clock()
            slot = self._find(h, base)
            if slot is not None:
                tokens = self._tokens(slot, now)
            else:
                slot = self._victim(base, now)
                tokens = float(self.burst)
            # State before key: a worker killed in between leaves the old key with a fresh state,
            # never this key with the old one's.
            self._state[2 * slot] = max(0.0, tokens - 1.0)
            self._state[2 * slot + 1] = now
            self._keys[slot] = h

    def _victim(self, base: int, now: float) -> int:
        oldest, oldest_at = base, math.inf
        for slot in range(base, base + WAYS):
            if not self._keys[slot] or self._tokens(slot, now) >= self.burst:
                return slot  # empty, or filled up again: the same as no bucket
            at = self._state[2 * slot + 1]
            if at < oldest_at:
                oldest, oldest_at = slot, at
        self.evictions += 1
        return oldest

    # ---- locking ---------------------------------------------------------------------------
    def _locked(self, set_index: int) -> _SetLock:
        return _SetLock(self, set_index)

    def _try_lock(self, set_index: int) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, set_index)
        except OSError as exc:
            if exc.errno in _BUSY:
                return False
            raise
        return True

    def _unlock(self, set_index: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, set_index)


class _SetLock:
    """A set's record lock for a few struct operations; given up on after ``lock_timeout``."""

    __slots__ = ("held", "index", "table")

    def __init__(self, table: SharedFailureTable, index: int) -> None:
        self.table = table
        self.index = index
        self.held = False

    def __enter__(self) -> None:
        table = self.table
        if table._try_lock(self.index):
            self.held = True
            return
        # Held by another process for a few microseconds, normally: wait a little. The sleep is
        # gevent's in a worker, so other greenlets run meanwhile.
        deadline = time.monotonic() + table.lock_timeout
        pause = 0.0002
        while time.monotonic() < deadline:
            time.sleep(pause)
            if table._try_lock(self.index):
                self.held = True
                return
            pause = min(pause * 2, 0.005)
        table.unlocked += 1
        if table.unlocked == 1 or table.unlocked % 1000 == 0:
            log(
                logger,
                "warning",
                "auth rate limit: a lock was not released in time; updating without it",
                times=table.unlocked,
            )

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.table._unlock(self.index)
            self.held = False


class SharedAuthLimits:
    """The master's tables, one per port and limit settings, made before it forks a worker.

    A reload that leaves a port's ``[ports.auth_rate_limit]`` (and alias) as it was keeps its
    table, so counting goes on across the reload and both generations count into it while the
    old one drains. Changed settings are a new limit and start with empty buckets.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tables: dict[tuple[Any, ...], SharedFailureTable] = {}

    def prepare(self, configs: Iterable[Config]) -> None:
        """Have a table for every limited port of ``configs`` and none for anything else.

        ``configs``: those of the generations the master may still fork workers for.
        """
        # A port that authenticates nobody never consults its limiter: no table for it.
        wanted = {
            settings_key(port): port
            for config in configs
            for port in config.active_ports()
            if port.auth_rate_limit.burst > 0 and port.client_auth.split(":", 1)[0] != "none"
        }
        for key in [k for k in self.tables if k not in wanted]:
            self.tables.pop(key).close()
        for key, port in wanted.items():
            if key not in self.tables:
                cfg = port.auth_rate_limit
                self.tables[key] = SharedFailureTable(
                    cfg.burst, cfg.refill_per_minute, cfg.max_clients, cfg.ipv6_prefix, self.clock
                )

    def limiter_for(self, port: PortConfig) -> SharedFailureTable | None:
        """In a worker: the port's table; None if the port has no limit or the master made none."""
        return self.tables.get(settings_key(port))

    def close(self) -> None:
        for table in self.tables.values():
            table.close()
        self.tables.clear()
