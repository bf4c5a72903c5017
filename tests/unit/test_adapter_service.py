"""wsserver.adapters.service.Adapter with a scripted backend: what the handshake gets back."""

from __future__ import annotations

import io

from wsserver.adapters import Adapter, Decision, Outcome, parse_adapter
from wsserver.adapters.cli import adapter_test


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Scripted:
    def __init__(self, clock: Clock, answers: dict[str, Outcome]) -> None:
        self.clock, self.answers, self.calls = clock, answers, []

    def precheck(self, username: str, password: str) -> str:
        return "no colons" if ":" in username else ""

    def authenticate(self, url: str, username: str, password: str, timeouts) -> Outcome:
        self.calls.append((url, username))
        self.clock.t += 0.25
        return self.answers[url]


def settings(**lb: object):
    table = {
        "name": "corp",
        "type": "http",
        "load_balancing": lb,
        "servers": [
            {"url": "http://a/auth"},
            {"url": "http://b/auth"},
            {"url": "http://dr/auth", "priority": 2},
        ],
    }
    result, errors = parse_adapter(table, 0, "t.toml")
    assert errors == []
    return result


def adapter(answers: dict[str, Outcome], **lb: object) -> tuple[Adapter, Scripted, list]:
    clock = Clock()
    backend = Scripted(clock, answers)
    seen: list = []
    return (
        Adapter(settings(**lb), backend=backend, now=clock, observer=lambda *a: seen.append(a)),
        backend,
        seen,
    )


def test_accept_reject_and_unavailable_map_to_the_handshake_statuses() -> None:
    ok = Outcome.accepted("HTTP 200")
    fail = Outcome.failed("refused", "connect")
    a, _, seen = adapter({"http://a/auth": ok, "http://b/auth": fail, "http://dr/auth": ok})
    result = a.authenticate("alice", "pw")
    assert (result.decision, result.http_status, result.user) == (Decision.ACCEPTED, None, "alice")
    assert [(t.server, t.result, t.ms) for t in result.tried] == [
        ("http://b/auth", "failed", 250.0),
        ("http://a/auth", "accepted", 250.0),
    ]
    assert seen == [
        ("corp", "http://b/auth", "failed", 0.25, 0.0),
        ("corp", "http://a/auth", "accepted", 0.25, 0.0),
    ]

    a, _, _ = adapter(
        {"http://a/auth": ok, "http://b/auth": Outcome.rejected("HTTP 401"), "http://dr/auth": ok}
    )
    assert a.authenticate("alice", "bad").http_status == 401

    a, _, _ = adapter(dict.fromkeys(("http://a/auth", "http://b/auth", "http://dr/auth"), fail))
    result = a.authenticate("alice", "pw")
    assert (result.decision, result.http_status, result.detail) == (
        Decision.UNAVAILABLE,
        503,
        "every server failed",
    )
    assert len(result.tried) == 4  # 2 in pool 1, 2 on the one-server pool 2


def test_the_time_budget_is_a_deadline() -> None:
    fail = Outcome.failed("timeout", "timeout")
    a, backend, _ = adapter(dict.fromkeys(("http://a/auth", "http://b/auth", "http://dr/auth"), fail))
    result = a.authenticate("alice", "pw", timeout=0.4)  # each attempt takes 0.25 s
    assert result.detail == "deadline reached" and len(backend.calls) == 2


def test_local_rejects_never_reach_a_backend() -> None:
    a, backend, seen = adapter({})
    for user, password, why in [
        ("", "pw", "empty user name"),
        ("alice", "", "empty password"),
        ("al\x00ice", "pw", "control character in user name"),
        ("a:b", "pw", "no colons"),
        ("x" * 2000, "pw", "user name or password too long"),
    ]:
        result = a.authenticate(user, password)
        assert (result.decision, result.detail, result.tried) == (Decision.REJECTED, why, ())
    assert backend.calls == [] and seen == []


def test_cli_prints_the_servers_in_order() -> None:
    ok = Outcome.accepted("HTTP 200")
    clock = Clock()
    backend = Scripted(
        clock,
        {"http://a/auth": ok, "http://b/auth": Outcome.failed("refused", "connect"), "http://dr/auth": ok},
    )
    out = io.StringIO()
    code = adapter_test(settings(), "alice", "pw", out=out, backend=backend, now=clock)
    assert code == 0
    assert out.getvalue().splitlines()[:4] == [
        "adapter corp (http): priority 1: http://a/auth, http://b/auth; priority 2: http://dr/auth",
        "  1. http://b/auth  failed        250.0 ms  refused",
        "  2. http://a/auth  accepted      250.0 ms  HTTP 200",
        "result: accepted: HTTP 200",
    ]
