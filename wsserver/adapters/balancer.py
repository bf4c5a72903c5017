"""The adapter load balancer: prioritized server pools, round-robin, attempt limits, penalties.

Pure logic: no sockets, no gevent, no clock of its own. The caller injects ``now`` (seconds,
monotonic) and a callback that performs one backend request and classifies the answer as an
:class:`Outcome`. ``docs/adapters.md`` describes the algorithm with a worked example; the
short version, per request:

1. Pools are tried in ascending priority number (1 before 2) until one answers.
2. Inside a pool, a cursor gives plain round-robin; it starts at the server configured last.
   Walking from the cursor, every server whose penalty is above the lowest penalty of the
   pool is *skipped* and pays one unit of its penalty; the first server at the lowest penalty
   is tried first, then the other lowest-penalty servers in rotation order, then the
   penalized ones (lowest penalty first) as a last resort.
3. A pool allows ``request_attempts`` requests, and each server ``server_request_attempts``
   (a one-server pool: ``request_attempts`` only). Retries go round the order again.
4. ACCEPTED and REJECTED answers end the request at once (a reject is never retried and never
   penalized); FAILED goes on to the next server. After the request the cursor moves to the
   server after the last one tried.
5. Penalties: ``connection_failure_threshold`` consecutive failures of a server add
   ``connection_failure_weight``, and so does every further consecutive failure; an answer
   slower than ``high_load_threshold_ms`` adds ``high_load_weight``; a skip pays one unit;
   ``penalty_decay_per_s`` units decay per second; the penalty stays in 0..``penalty_limit``.
6. Every pool exhausted (or the caller's deadline reached) -> UNAVAILABLE, never a reject.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

# Penalties are floats (decay is continuous); values closer than this count as equal.
EPSILON = 1e-9
# The smallest time budget handed to a callback when a deadline is near.
MIN_TIMEOUT_S = 0.001


class Result(StrEnum):
    """How the adapter classified one backend answer."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # technically correct refusal (wrong password, revoked certificate)
    FAILED = "failed"  # cannot connect, time-out, server or protocol error


class Decision(StrEnum):
    """The answer of a whole balanced request."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"  # every pool exhausted: the handshake answers 503, never 401


@dataclass(frozen=True)
class Outcome:
    """One backend answer. ``detail`` is for logs and never holds a secret.

    ``kind`` refines failures: ``connect`` (refused, unreachable, connect time-out),
    ``timeout`` (request time-out), ``tls``, ``protocol``, ``server`` (an error answer).
    """

    result: Result
    detail: str = ""
    kind: str = ""
    user: str = ""  # the backend's name for the user on accept (e.g. an LDAP DN)
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def accepted(cls, detail: str = "", user: str = "", **attributes: Any) -> Outcome:
        return cls(Result.ACCEPTED, detail, "", user, attributes)

    @classmethod
    def rejected(cls, detail: str = "", **attributes: Any) -> Outcome:
        return cls(Result.REJECTED, detail, "", "", attributes)

    @classmethod
    def failed(cls, detail: str, kind: str = "server") -> Outcome:
        return cls(Result.FAILED, detail, kind)


class Timeouts(NamedTuple):
    """Seconds one backend request may take: to connect, then for the request itself."""

    connect: float
    request: float


class Policy(Protocol):
    """The ``[adapters.load_balancing]`` keys (``settings.LoadBalancing`` has them).

    Read-only members, so the frozen ``LoadBalancing`` dataclass satisfies the protocol.
    """

    @property
    def connection_timeout_ms(self) -> int: ...

    @property
    def request_timeout_ms(self) -> int: ...

    @property
    def request_attempts(self) -> int: ...

    @property
    def server_request_attempts(self) -> int: ...

    @property
    def penalty_limit(self) -> int: ...

    @property
    def connection_failure_threshold(self) -> int: ...

    @property
    def connection_failure_weight(self) -> int: ...

    @property
    def high_load_threshold_ms(self) -> int: ...

    @property
    def high_load_weight(self) -> int: ...

    @property
    def penalty_decay_per_s(self) -> float: ...


@dataclass
class ServerState:
    """A server's live state; read it through :meth:`Balancer.snapshot`."""

    url: str
    priority: int
    index: int  # position in the configuration
    penalty: float = 0.0
    consecutive_failures: int = 0
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    slow: int = 0  # answers slower than high_load_threshold_ms
    skips: int = 0
    last_update: float = 0.0  # clock time of the last decay


@dataclass(frozen=True)
class ServerSnapshot:
    url: str
    priority: int
    penalty: float
    consecutive_failures: int
    requests: int
    accepted: int
    rejected: int
    failed: int
    slow: int
    skips: int


@dataclass(frozen=True)
class Attempt:
    """One backend request of a balanced request, in the order they were made."""

    server: str
    result: Result
    seconds: float
    detail: str = ""
    kind: str = ""
    penalty: float = 0.0  # the server's penalty after this attempt


@dataclass(frozen=True)
class BalanceResult:
    decision: Decision
    attempts: tuple[Attempt, ...]
    outcome: Outcome | None = None  # the answer that decided; None when unavailable
    reason: str = ""  # why unavailable: "exhausted" or "deadline"


Call = Callable[[str, Timeouts], Outcome]
AttemptHook = Callable[[ServerState, Attempt], None]


class _Pool:
    def __init__(self, priority: int, servers: list[ServerState]) -> None:
        self.priority = priority
        self.servers = servers
        self.cursor = len(servers) - 1  # the server configured last is tried first


class Balancer:
    """Balances requests over ``servers`` = ``[(url, priority), ...]`` in configuration order.

    Thread- and greenlet-safe: the state is changed under a lock that is never held while a
    callback runs, so concurrent requests interleave freely.
    """

    def __init__(self, servers: Sequence[tuple[str, int]], policy: Policy, now: Callable[[], float]) -> None:
        if not servers:
            raise ValueError("a balancer needs at least one server")
        self.policy = policy
        self.now = now
        self._lock = threading.Lock()
        start = now()
        states = [
            ServerState(url, priority, i, last_update=start) for i, (url, priority) in enumerate(servers)
        ]
        self._states = states
        self._pools = [
            _Pool(p, [s for s in states if s.priority == p]) for p in sorted({s.priority for s in states})
        ]

    # --- state ----------------------------------------------------------------------------

    def snapshot(self) -> list[ServerSnapshot]:
        """Every server's penalty and counts, in configuration order (penalties decayed to now)."""
        with self._lock:
            now = self.now()
            for state in self._states:
                self._decay(state, now)
            return [
                ServerSnapshot(
                    s.url,
                    s.priority,
                    s.penalty,
                    s.consecutive_failures,
                    s.requests,
                    s.accepted,
                    s.rejected,
                    s.failed,
                    s.slow,
                    s.skips,
                )
                for s in self._states
            ]

    def pools(self) -> list[tuple[int, list[str]]]:
        return [(pool.priority, [s.url for s in pool.servers]) for pool in self._pools]

    def _decay(self, state: ServerState, now: float) -> None:
        elapsed = now - state.last_update
        if elapsed > 0:
            state.penalty = max(0.0, state.penalty - self.policy.penalty_decay_per_s * elapsed)
            state.last_update = now

    def _add_penalty(self, state: ServerState, amount: float) -> None:
        state.penalty = min(float(self.policy.penalty_limit), max(0.0, state.penalty + amount))

    # --- one request ----------------------------------------------------------------------

    def _order(self, pool: _Pool) -> list[ServerState]:
        """The order of this request's attempts in ``pool``; pays the skips. Under the lock."""
        now = self.now()
        servers = pool.servers
        for state in servers:
            self._decay(state, now)
        n = len(servers)
        rotation = [servers[(pool.cursor + k) % n] for k in range(n)]
        lowest = min(s.penalty for s in servers)
        best = [s for s in rotation if s.penalty <= lowest + EPSILON]
        rest = sorted((s for s in rotation if s.penalty > lowest + EPSILON), key=lambda s: s.penalty)
        for state in rotation:
            if state is best[0]:
                break
            state.skips += 1  # passed over by the round-robin walk: pays one unit
            self._add_penalty(state, -1.0)
        return best + rest

    def _sequence(self, order: list[ServerState]) -> list[ServerState]:
        policy = self.policy
        if len(order) == 1:
            return order * policy.request_attempts
        total = min(policy.request_attempts, len(order) * policy.server_request_attempts)
        sequence = [s for _ in range(policy.server_request_attempts) for s in order]
        return sequence[:total]

    def _record(self, state: ServerState, outcome: Outcome, seconds: float) -> None:
        """Count an answer and update the penalty. Under the lock."""
        policy = self.policy
        self._decay(state, self.now())
        state.requests += 1
        if outcome.result is Result.FAILED:
            state.failed += 1
            state.consecutive_failures += 1
            if state.consecutive_failures >= policy.connection_failure_threshold:
                self._add_penalty(state, policy.connection_failure_weight)
            return
        if outcome.result is Result.ACCEPTED:
            state.accepted += 1
        else:
            state.rejected += 1
        state.consecutive_failures = 0
        if seconds * 1000.0 > policy.high_load_threshold_ms:
            state.slow += 1
            self._add_penalty(state, policy.high_load_weight)

    def _timeouts(self, deadline: float | None) -> Timeouts:
        connect = self.policy.connection_timeout_ms / 1000.0
        request = self.policy.request_timeout_ms / 1000.0
        if deadline is not None:
            left = max(MIN_TIMEOUT_S, deadline - self.now())
            connect, request = min(connect, left), min(request, left)
        return Timeouts(connect, request)

    def run(
        self, call: Call, *, deadline: float | None = None, on_attempt: AttemptHook | None = None
    ) -> BalanceResult:
        """Balance one request. ``call(url, timeouts)`` performs it on one server.

        An exception from ``call`` counts as a FAILED outcome of that server. No new attempt
        starts at or after ``deadline`` (clock time), and the time-outs handed to ``call``
        are cut to what is left of it.
        """
        attempts: list[Attempt] = []
        for pool in self._pools:
            with self._lock:
                sequence = self._sequence(self._order(pool))
            last: ServerState | None = None
            try:
                for state in sequence:
                    if deadline is not None and self.now() >= deadline:
                        return BalanceResult(Decision.UNAVAILABLE, tuple(attempts), None, "deadline")
                    last = state
                    outcome, seconds = self._call(call, state.url, deadline)
                    with self._lock:
                        self._record(state, outcome, seconds)
                        penalty = state.penalty
                    attempt = Attempt(
                        state.url, outcome.result, seconds, outcome.detail, outcome.kind, penalty
                    )
                    attempts.append(attempt)
                    if on_attempt is not None:
                        on_attempt(state, attempt)
                    if outcome.result is not Result.FAILED:
                        decision = (
                            Decision.ACCEPTED if outcome.result is Result.ACCEPTED else Decision.REJECTED
                        )
                        return BalanceResult(decision, tuple(attempts), outcome)
            finally:
                if last is not None:
                    with self._lock:
                        pool.cursor = (pool.servers.index(last) + 1) % len(pool.servers)
        return BalanceResult(Decision.UNAVAILABLE, tuple(attempts), None, "exhausted")

    def _call(self, call: Call, url: str, deadline: float | None) -> tuple[Outcome, float]:
        start = self.now()
        try:
            outcome = call(url, self._timeouts(deadline))
        except Exception as exc:  # a bug or an unexpected library error: that server failed
            outcome = Outcome.failed(f"{type(exc).__name__}: {exc}", "error")
        if not isinstance(outcome, Outcome):
            outcome = Outcome.failed(f"adapter returned {type(outcome).__name__}, not an Outcome", "error")
        return outcome, max(0.0, self.now() - start)
