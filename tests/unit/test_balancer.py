"""The adapter load balancer, rule by rule, with a fake clock and scripted servers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from wsserver.adapters.balancer import Balancer, Decision, Outcome, Result, Timeouts
from wsserver.config.adapter_settings import LoadBalancing

ACCEPT = Outcome.accepted("ok")
REJECT = Outcome.rejected("invalidCredentials")
FAIL = Outcome.failed("connection refused", "connect")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Servers:
    """Scripted backends: ``answers[url]`` is an Outcome or a callable giving one; each call
    advances the clock by ``latency[url]`` (default 10 ms) and is logged."""

    def __init__(
        self,
        clock: Clock,
        answers: dict[str, Outcome | Callable[[], Outcome]],
        latency: dict[str, float] | None = None,
    ) -> None:
        self.clock = clock
        self.answers = answers
        self.latency = latency or {}
        self.log: list[str] = []
        self.timeouts: list[Timeouts] = []

    def __call__(self, url: str, timeouts: Timeouts) -> Outcome:
        self.log.append(url)
        self.timeouts.append(timeouts)
        self.clock.advance(self.latency.get(url, 0.010))
        answer = self.answers[url]
        return answer() if callable(answer) else answer

    def take(self) -> list[str]:
        log, self.log = self.log, []
        return log


def policy(**overrides: object) -> LoadBalancing:
    return dataclasses.replace(LoadBalancing(penalty_decay_per_s=0.0), **overrides)


def make(
    servers: list[tuple[str, int]], answers: dict, latency: dict | None = None, **overrides: object
) -> tuple[Balancer, Servers, Clock]:
    clock = Clock()
    return Balancer(servers, policy(**overrides), clock), Servers(clock, answers, latency), clock


def penalties(balancer: Balancer) -> dict[str, float]:
    return {s.url: round(s.penalty, 6) for s in balancer.snapshot()}


# --- ordering: pools by priority, lowest number first ------------------------------------------


def test_pools_are_tried_by_ascending_priority_number() -> None:
    servers = [("a", 2), ("b", 1), ("c", 1), ("d", 3)]
    balancer, backend, _ = make(servers, {"a": FAIL, "b": FAIL, "c": FAIL, "d": ACCEPT}, request_attempts=2)
    assert balancer.pools() == [(1, ["b", "c"]), (2, ["a"]), (3, ["d"])]
    result = balancer.run(backend)
    assert result.decision is Decision.ACCEPTED
    # pool 1 (last configured first), pool 2 (one server: request_attempts = 2 tries), pool 3
    assert backend.take() == ["c", "b", "a", "a", "d"]
    assert [a.server for a in result.attempts] == ["c", "b", "a", "a", "d"]


# --- round-robin, the server configured last first --------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a"], ["a", "a", "a"]),
        (["a", "b"], ["b", "a", "b", "a"]),
        (["a", "b", "c"], ["c", "a", "b", "c", "a", "b"]),
    ],
)
def test_round_robin_starts_with_the_last_configured_server(names: list[str], expected: list[str]) -> None:
    balancer, backend, _ = make([(n, 1) for n in names], dict.fromkeys(names, ACCEPT))
    for _ in expected:
        assert balancer.run(backend).decision is Decision.ACCEPTED
    assert backend.take() == expected


def test_after_a_failover_the_rotation_continues_after_the_last_server_tried() -> None:
    balancer, backend, _ = make([("a", 1), ("b", 1), ("c", 1)], {"a": ACCEPT, "b": ACCEPT, "c": FAIL})
    balancer.run(backend)  # c fails, a answers
    balancer.run(backend)  # the rotation goes on after a
    assert backend.take() == ["c", "a", "b"]


# --- attempt limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "request_attempts", "server_request_attempts", "expected"),
    [
        (3, 4, 2, ["c", "a", "b", "c"]),  # 3 servers x 2 = 6, capped by request_attempts = 4
        (3, 10, 2, ["c", "a", "b", "c", "a", "b"]),  # capped by 3 x server_request_attempts
        (3, 2, 1, ["c", "a"]),  # the defaults: 2 per pool, 1 per server
        (2, 5, 1, ["b", "a"]),
        (1, 3, 1, ["a", "a", "a"]),  # one server: request_attempts only
        (1, 2, 5, ["a", "a"]),  # ... server_request_attempts does not apply
    ],
)
def test_attempt_limits(
    count: int, request_attempts: int, server_request_attempts: int, expected: list[str]
) -> None:
    names = ["a", "b", "c"][:count]
    balancer, backend, _ = make(
        [(n, 1) for n in names],
        dict.fromkeys(names, FAIL),
        request_attempts=request_attempts,
        server_request_attempts=server_request_attempts,
    )
    result = balancer.run(backend)
    assert result.decision is Decision.UNAVAILABLE
    assert backend.take() == expected


# --- classification: a reject is final, never retried, never penalized -------------------------


@pytest.mark.parametrize(("answer", "decision"), [(REJECT, Decision.REJECTED), (ACCEPT, Decision.ACCEPTED)])
def test_an_answer_ends_the_request_at_once(answer: Outcome, decision: Decision) -> None:
    balancer, backend, _ = make(
        [("a", 1), ("b", 1), ("z", 2)],
        {"a": ACCEPT, "b": answer, "z": ACCEPT},
        request_attempts=5,
        server_request_attempts=3,
    )
    result = balancer.run(backend)
    assert result.decision is decision
    assert result.outcome is answer
    assert backend.take() == ["b"]
    assert penalties(balancer) == {"a": 0, "b": 0, "z": 0}


def test_a_reject_resets_nothing_and_adds_no_penalty() -> None:
    balancer, backend, _ = make([("a", 1)], {"a": REJECT}, connection_failure_threshold=1)
    for _ in range(10):
        assert balancer.run(backend).decision is Decision.REJECTED
    snap = balancer.snapshot()[0]
    assert (snap.penalty, snap.rejected, snap.failed, snap.requests) == (0, 10, 0, 10)


def test_an_exception_in_the_adapter_is_a_failure_of_that_server() -> None:
    def boom() -> Outcome:
        raise RuntimeError("bug")

    balancer, backend, _ = make([("a", 1), ("b", 1)], {"a": ACCEPT, "b": boom})
    result = balancer.run(backend)
    assert result.decision is Decision.ACCEPTED
    assert [(a.server, a.result, a.kind) for a in result.attempts] == [
        ("b", Result.FAILED, "error"),
        ("a", Result.ACCEPTED, ""),
    ]
    assert "RuntimeError: bug" in result.attempts[0].detail


# --- penalties: growth and cap -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "weight", "limit", "expected"),
    [
        (4, 50, 100, [0, 0, 0, 50, 100, 100, 100]),  # the defaults
        (1, 30, 100, [30, 60, 90, 100, 100, 100, 100]),
        (3, 7, 1000, [0, 0, 7, 14, 21, 28, 35]),
        (2, 50, 0, [0, 0, 0, 0, 0, 0, 0]),  # penalty_limit = 0 turns penalties off
    ],
)
def test_consecutive_failures_add_the_weight_up_to_the_limit(
    threshold: int, weight: int, limit: int, expected: list[int]
) -> None:
    balancer, backend, _ = make(
        [("a", 1)],
        {"a": FAIL},
        request_attempts=1,
        connection_failure_threshold=threshold,
        connection_failure_weight=weight,
        penalty_limit=limit,
    )
    seen = []
    for _ in expected:
        result = balancer.run(backend)
        seen.append(result.attempts[-1].penalty)
    assert seen == expected


def test_a_success_resets_the_consecutive_failure_count() -> None:
    script = iter([FAIL, FAIL, FAIL, ACCEPT, FAIL, FAIL, FAIL, FAIL])
    balancer, backend, _ = make([("a", 1)], {"a": lambda: next(script)}, request_attempts=1)
    seen = [balancer.run(backend).attempts[-1].penalty for _ in range(8)]
    assert seen == [0, 0, 0, 0, 0, 0, 0, 50]


@pytest.mark.parametrize(
    ("latency", "expected"),
    [
        (0.999, [0, 0, 0]),
        (1.0, [0, 0, 0]),  # "slower than" the threshold
        (1.001, [2, 4, 6]),
        (30.0, [2, 4, 6]),
    ],
)
def test_slow_answers_add_the_high_load_weight(latency: float, expected: list[int]) -> None:
    balancer, backend, _ = make([("a", 1)], {"a": ACCEPT}, {"a": latency})
    seen = [balancer.run(backend).attempts[-1].penalty for _ in expected]
    assert seen == expected
    assert balancer.snapshot()[0].slow == (3 if expected[0] else 0)


def test_slow_answers_are_capped_by_the_limit() -> None:
    balancer, backend, _ = make([("a", 1)], {"a": ACCEPT}, {"a": 2.0}, high_load_weight=40, penalty_limit=100)
    seen = [balancer.run(backend).attempts[-1].penalty for _ in range(4)]
    assert seen == [40, 80, 100, 100]


# --- skipping pays one unit, and the server returns ------------------------------------------


def test_a_penalized_server_is_skipped_pays_per_skip_and_returns() -> None:
    # a gets a penalty of 3 from one slow answer; b stays at 0.
    balancer, backend, _ = make(
        [("a", 1), ("b", 1)], {"a": ACCEPT, "b": ACCEPT}, {"a": 1.5}, high_load_weight=3
    )
    balancer.run(backend)  # b (configured last)
    balancer.run(backend)  # a, slow: penalty 3
    assert backend.take() == ["b", "a"]
    assert penalties(balancer) == {"a": 3, "b": 0}
    backend.latency["a"] = 0.010  # a is fast again
    rows = []
    for _ in range(7):
        balancer.run(backend)
        rows.append((backend.take()[0], penalties(balancer)["a"]))
    # the cursor is at b: no skip; then every request walks past a first, and a pays 1 per
    # skip until it is level with b; from then on plain round-robin.
    assert rows == [("b", 3), ("b", 2), ("b", 1), ("b", 0), ("a", 0), ("b", 0), ("a", 0)]
    assert balancer.snapshot()[0].skips == 3


def test_a_skipped_server_is_still_the_last_resort() -> None:
    answers = {"a": ACCEPT, "b": FAIL}
    balancer, backend, _ = make([("a", 1), ("b", 1)], answers, {"a": 1.5}, high_load_weight=50)
    balancer.run(backend)  # b fails, a answers slowly: penalty 50
    backend.take()
    result = balancer.run(backend)  # a is skipped for b, b fails, a is tried anyway
    assert backend.take() == ["b", "a"]
    assert result.decision is Decision.ACCEPTED


def test_equal_penalties_mean_plain_round_robin() -> None:
    names = ["a", "b", "c"]
    balancer, backend, _ = make(
        [(n, 1) for n in names], dict.fromkeys(names, ACCEPT), dict.fromkeys(names, 2.0), penalty_limit=6
    )
    for _ in range(9):
        balancer.run(backend)
    assert backend.take() == ["c", "a", "b"] * 3
    assert set(penalties(balancer).values()) == {6}
    assert all(s.skips == 0 for s in balancer.snapshot())


def test_penalized_servers_are_retried_lowest_penalty_first() -> None:
    names = ["a", "b", "c", "d"]
    balancer, backend, _ = make(
        [(n, 1) for n in names],
        dict.fromkeys(names, FAIL),
        request_attempts=4,
        connection_failure_threshold=1,
        connection_failure_weight=10,
    )
    balancer.run(backend)  # d, a, b, c fail: 10 each
    for server, extra in (("a", 2), ("b", 1)):
        for _ in range(extra):
            balancer._states[names.index(server)].penalty += 10
    backend.take()
    balancer.run(backend)
    # lowest (c, d at 10) first in rotation order from the cursor, then b (20), then a (30)
    assert backend.take() == ["d", "c", "b", "a"]


# --- decay ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "seconds", "expected"),
    [
        (1.0, 0, 50),
        (1.0, 20, 30),
        (1.0, 50, 0),
        (1.0, 500, 0),
        (0.5, 20, 40),
        (0.0, 1000, 50),
        (10, 4.5, 5),
    ],
)
def test_penalties_decay_with_time(rate: float, seconds: float, expected: float) -> None:
    balancer, backend, clock = make(
        [("a", 1)], {"a": FAIL}, request_attempts=1, connection_failure_threshold=1, penalty_decay_per_s=rate
    )
    balancer.run(backend)  # one failure: 50, counted when the answer came
    clock.advance(seconds)
    assert balancer.snapshot()[0].penalty == pytest.approx(expected)


def test_a_penalized_server_returns_by_decay_when_traffic_is_low() -> None:
    balancer, backend, clock = make(
        [("a", 1), ("b", 1)],
        {"a": ACCEPT, "b": FAIL},
        request_attempts=2,
        connection_failure_threshold=1,
        penalty_decay_per_s=1.0,
    )
    balancer.run(backend)  # b fails (50), a answers
    assert backend.take() == ["b", "a"]
    backend.answers["b"] = ACCEPT
    clock.advance(60)  # quiet minute: b's penalty decays to 0
    balancer.run(backend)
    balancer.run(backend)
    assert backend.take() == ["b", "a"]  # back in plain rotation, no skips needed


# --- pool fallback and exhaustion ----------------------------------------------------------


def test_pool_fallback_after_the_first_pool_is_exhausted() -> None:
    servers = [("p1a", 1), ("p1b", 1), ("p2a", 2), ("p2b", 2)]
    answers = {"p1a": FAIL, "p1b": FAIL, "p2a": ACCEPT, "p2b": ACCEPT}
    balancer, backend, _ = make(servers, answers, request_attempts=3, server_request_attempts=1)
    result = balancer.run(backend)
    assert result.decision is Decision.ACCEPTED
    assert [(a.server, a.result.value) for a in result.attempts] == [
        ("p1b", "failed"),
        ("p1a", "failed"),
        ("p2b", "accepted"),
    ]


def test_a_reject_in_the_first_pool_does_not_fall_back() -> None:
    balancer, backend, _ = make([("a", 1), ("z", 2)], {"a": REJECT, "z": ACCEPT})
    assert balancer.run(backend).decision is Decision.REJECTED
    assert backend.take() == ["a"]


def test_every_pool_exhausted_is_unavailable_never_a_reject() -> None:
    servers = [("a", 1), ("b", 1), ("c", 2)]
    balancer, backend, _ = make(servers, dict.fromkeys("abc", FAIL), request_attempts=2)
    result = balancer.run(backend)
    assert (result.decision, result.reason, result.outcome) == (Decision.UNAVAILABLE, "exhausted", None)
    assert backend.take() == ["b", "a", "c", "c"]


def test_the_deadline_stops_new_attempts_and_cuts_timeouts() -> None:
    names = ["a", "b", "c"]
    balancer, backend, clock = make(
        [(n, 1) for n in names], dict.fromkeys(names, FAIL), dict.fromkeys(names, 0.8), request_attempts=3
    )
    result = balancer.run(backend, deadline=clock() + 1.5)
    assert (result.decision, result.reason) == (Decision.UNAVAILABLE, "deadline")
    assert backend.take() == ["c", "a"]
    assert backend.timeouts[0] == Timeouts(1.5, 1.5)  # min(3 s / 5 s configured, 1.5 s left)
    assert backend.timeouts[1] == pytest.approx(Timeouts(0.7, 0.7))


def test_attempt_hook_and_snapshot_counts() -> None:
    seen = []
    balancer, backend, _ = make([("a", 1), ("b", 1)], {"a": ACCEPT, "b": FAIL})
    balancer.run(backend, on_attempt=lambda state, attempt: seen.append((state.url, attempt.result.value)))
    assert seen == [("b", "failed"), ("a", "accepted")]
    a, b = balancer.snapshot()
    assert (a.requests, a.accepted, b.requests, b.failed, b.consecutive_failures) == (1, 1, 1, 1, 1)


def test_a_balancer_needs_servers() -> None:
    with pytest.raises(ValueError):
        Balancer([], policy(), Clock())


# --- the worked example of docs/adapters.md ------------------------------------------------------

EXAMPLE_SERVERS = [("ldap1", 1), ("ldap2", 1), ("ldap3", 1), ("ldap-dr", 2)]
EXAMPLE_POLICY = {
    "request_attempts": 2,
    "server_request_attempts": 1,
    "connection_failure_threshold": 2,
    "connection_failure_weight": 4,
    "penalty_limit": 100,
    "high_load_threshold_ms": 1000,
    "high_load_weight": 2,
    "penalty_decay_per_s": 0.0,
}
# request number -> (servers down, servers answering slowly); "wrong" = a wrong password
EXAMPLE_EVENTS = {
    **{n: ({"ldap3"}, set()) for n in range(4, 15)},
    5: ({"ldap3"}, {"ldap2"}),
    11: ({"ldap3"}, set(), "wrong"),
    15: ({"ldap1", "ldap2", "ldap3"}, set()),
    16: ({"ldap1", "ldap2", "ldap3", "ldap-dr"}, set()),
}


def worked_example() -> list[str]:
    """The rows of the docs' table: request, servers tried, skips, penalties after, answer."""
    clock = Clock()
    balancer = Balancer(EXAMPLE_SERVERS, policy(**EXAMPLE_POLICY), clock)
    rows = []
    for n in range(1, 19):
        event = EXAMPLE_EVENTS.get(n, (set(), set()))
        down, slow = event[0], event[1]
        wrong = len(event) > 2

        def call(url: str, timeouts: Timeouts, down=down, slow=slow, wrong=wrong) -> Outcome:
            clock.advance(1.5 if url in slow else 0.01)
            if url in down:
                return FAIL
            return REJECT if wrong else ACCEPT

        skips_before = {s.url: s.skips for s in balancer.snapshot()}
        result = balancer.run(call)
        skipped = [s.url for s in balancer.snapshot() if s.skips > skips_before[s.url]]
        tried = ", ".join(
            f"{a.server} {a.result.value}{' (1500 ms)' if a.seconds > 1 else ''}" for a in result.attempts
        )
        pens = " / ".join(f"{s.penalty:g}" for s in balancer.snapshot())
        rows.append(f"| {n} | {tried} | {', '.join(skipped) or '-'} | {pens} | {result.decision.value} |")
    return rows


def test_the_worked_example_in_the_docs_is_what_the_code_does() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "adapters.md").read_text()
    for row in worked_example():
        assert row in doc, f"docs/adapters.md lacks (or has a different) row:\n{row}"


if __name__ == "__main__":  # print the table for the docs
    print("\n".join(worked_example()))
