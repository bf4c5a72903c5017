"""wsserver.security.stapling: what the status callback hands out while fetches succeed and fail."""

from __future__ import annotations

from typing import Any

from wsserver.security import stapling
from wsserver.security.stapling import RETRY_MIN, StapleError, Stapler


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(answers: list[Any]) -> tuple[Stapler, Clock]:
    clock = Clock()
    stapler = Stapler("p", None, None, "http://ocsp.test/", wall=clock)  # type: ignore[arg-type]

    def fetch() -> tuple[bytes, float | None]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    stapler.fetch = fetch  # type: ignore[method-assign]
    return stapler, clock


def test_serves_the_response_until_next_update_while_the_responder_is_down() -> None:
    next_update = 1_000_600.0
    stapler, clock = make(
        [(b"resp1", next_update), StapleError("connection refused"), StapleError("connection refused")]
    )
    assert stapler.callback(None, None) == b""  # before the first fetch: no staple, no waiting
    assert stapler.refresh() == 300.0  # halfway to nextUpdate
    assert stapler.callback(None, None) == b"resp1"
    clock.now += 300
    pause = stapler.refresh()
    assert pause == RETRY_MIN and stapler.callback(None, None) == b"resp1"  # kept: still valid
    clock.now = next_update + 1
    assert stapler.callback(None, None) == b""  # lapsed: served without a staple
    stapler.refresh()
    assert stapler.der == b"" and stapler.failures == 2


def test_backoff_grows_and_is_capped() -> None:
    stapler, _ = make([StapleError("down")] * 12)
    pauses = [stapler.refresh() for _ in range(12)]
    assert pauses[:4] == [5.0, 10.0, 20.0, 40.0]
    assert max(pauses) == stapling.RETRY_MAX


def test_a_revoked_answer_drops_the_staple_at_once() -> None:
    stapler, _ = make([(b"resp1", 1_000_600.0), StapleError("certificate status: revoked (key_compromise)")])
    stapler.refresh()
    stapler.refresh()
    assert stapler.callback(None, None) == b""


def test_refresh_bounds() -> None:
    stapler, _ = make([(b"r", 1_000_002.0), (b"r", None), (b"r", 1_000_000.0 + 10 * 86400)])
    assert stapler.refresh() == stapling.REFRESH_MIN  # very short validity: not hammered
    assert stapler.refresh() == stapling.REFRESH_MAX  # no nextUpdate: hourly
    assert stapler.refresh() == stapling.REFRESH_MAX  # long validity: still hourly
