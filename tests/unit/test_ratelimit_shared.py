"""wsserver.security.ratelimit_shared: failure buckets in shared memory (no processes here;
``attach`` gives a second view of the same memory, as a second worker has)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from wsserver.config import parse_config
from wsserver.security import ratelimit_shared
from wsserver.security.ratelimit_shared import WAYS, SharedAuthLimits, SharedFailureTable, settings_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


_made: list[SharedFailureTable] = []


@pytest.fixture(autouse=True)
def _close_tables() -> Iterator[None]:
    yield
    while _made:
        _made.pop().close()


def table(
    clock: Clock, burst: int = 3, per_minute: float = 6, clients: int = 1000, **kw
) -> SharedFailureTable:
    _made.append(SharedFailureTable(burst, per_minute, clients, clock=clock, **kw))
    return _made[-1]


def test_burst_then_refused_then_refilled(clock) -> None:
    lim = table(clock)  # one back every 10 s
    for _ in range(3):
        assert lim.retry_after("192.0.2.1") is None
        lim.failed("192.0.2.1")
    assert lim.retry_after("192.0.2.1") == 10
    assert lim.retry_after("192.0.2.2") is None
    clock.now += 4
    assert lim.retry_after("192.0.2.1") == 6
    clock.now += 6
    assert lim.retry_after("192.0.2.1") is None
    lim.failed("192.0.2.1")
    assert lim.retry_after("192.0.2.1") == 10


def test_two_views_share_one_budget(clock) -> None:
    """What N workers see: failures made through any view count for all of them."""
    first = table(clock, burst=4)
    views = [first] + [first.attach() for _ in range(3)]
    for i in range(4):
        views[i].failed("198.51.100.9")
    for view in views:
        assert view.retry_after("198.51.100.9") == 10
        assert view.retry_after("198.51.100.10") is None
    assert len(first) == 1


def test_ipv6_counts_per_prefix_and_mapped_ipv4_as_ipv4(clock) -> None:
    lim = table(clock, burst=2)
    lim.failed("2001:db8:1:2::1")
    lim.failed("2001:db8:1:2:ffff::9")
    assert lim.retry_after("2001:db8:1:2::77") is not None
    assert lim.retry_after("2001:db8:1:3::1") is None
    lim.failed("::ffff:192.0.2.7")
    lim.failed("192.0.2.7")
    assert lim.retry_after("192.0.2.7") is not None


def test_a_full_set_forgets_refilled_then_least_recent_buckets(clock) -> None:
    lim = table(clock, burst=2, clients=WAYS)  # one set: every client shares it
    assert lim.sets == 1
    for i in range(WAYS):
        lim.failed(f"192.0.2.{i}")
        lim.failed(f"192.0.2.{i}")
        clock.now += 1
    assert len(lim) == WAYS and lim.evictions == 0
    lim.failed("203.0.113.1")  # the set is full: the oldest (192.0.2.0) goes
    assert lim.evictions == 1
    assert lim.retry_after("192.0.2.0") is None
    assert all(lim.retry_after(f"192.0.2.{i}") is not None for i in range(1, WAYS))
    # A bucket that has filled up again is taken before any eviction.
    clock.now += 100
    lim.failed("203.0.113.2")
    assert lim.evictions == 1


def test_a_cycling_attacker_does_not_switch_the_limit_off(clock) -> None:
    """Thousands of one-off addresses: a client failing now keeps being limited."""
    lim = table(clock, burst=3, clients=1024)
    for i in range(20_000):
        clock.now += 0.001
        lim.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        if i % 50 == 0:
            lim.failed("192.0.2.200")
    assert lim.retry_after("192.0.2.200") is not None
    assert lim.evictions > 0
    assert lim.memory_bytes == 1024 * ratelimit_shared.SLOT_BYTES


def test_garbage_in_a_slot_never_refuses_for_longer_than_a_refill(clock) -> None:
    """A worker killed halfway through a write: every read clamps what it finds."""
    lim = table(clock, burst=3)
    lim.failed("192.0.2.1")
    slot = next(i for i in range(lim.slots) if lim._keys[i])
    for tokens, at in (
        (-5.0, clock.now),
        (math.nan, math.nan),
        (1e300, clock.now + 1e9),
        (0.0, clock.now + 1e9),
    ):
        lim._state[2 * slot], lim._state[2 * slot + 1] = tokens, at
        wait = lim.retry_after("192.0.2.1")
        assert wait is None or wait <= 10
        clock.now += 10
        assert lim.retry_after("192.0.2.1") is None


def test_a_lock_never_released_does_not_wedge(clock, monkeypatch) -> None:
    lim = table(clock, burst=2, lock_timeout=0.02)
    monkeypatch.setattr(lim, "_try_lock", lambda index: False)  # another process holds it for good
    lim.failed("192.0.2.1")
    lim.failed("192.0.2.1")
    assert lim.retry_after("192.0.2.1") == 10
    assert lim.unlocked == 3


def test_locks_are_released(clock) -> None:
    lim = table(clock, burst=2)
    lim.failed("192.0.2.1")
    base = lim._hash("192.0.2.1") % lim.sets
    assert lim._try_lock(base)  # ours to take again, and nothing left held
    lim._unlock(base)
    assert lim.unlocked == 0


def test_success_path_takes_no_lock_for_a_client_without_a_bucket(clock, monkeypatch) -> None:
    lim = table(clock)
    monkeypatch.setattr(lim, "_try_lock", lambda index: pytest.fail("locked"))
    assert lim.retry_after("192.0.2.50") is None


CONFIG = """
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[ports]]
alias = "a"
port = 9001
client_auth = "token"
{a}
[[ports]]
alias = "b"
port = 9002
client_auth = "token"
[ports.auth_rate_limit]
burst = {b}

[[users]]
name = "u"
token = "token-0123456789abcdef"
"""


def config(a: str = "", b: int = 5):
    return parse_config(CONFIG.format(a=a, b=b))


def test_tables_survive_a_reload_with_the_same_settings(clock) -> None:
    limits = SharedAuthLimits(clock)
    first = config()
    limits.prepare([first])
    a, b = (limits.limiter_for(p) for p in first.ports)
    assert a is not None and b is not None and b.burst == 5
    for _ in range(5):
        b.failed("192.0.2.1")
    reloaded = config(a="[ports.auth_rate_limit]\nburst = 0\n")  # "a" off, "b" as it was
    limits.prepare([reloaded, first])  # during the reload both generations run
    assert limits.limiter_for(reloaded.ports[1]) is b
    assert limits.limiter_for(reloaded.ports[0]) is None
    assert set(limits.tables) == {settings_key(first.ports[0]), settings_key(first.ports[1])}
    limits.prepare([reloaded])  # the old generation is gone
    assert limits.limiter_for(first.ports[0]) is None
    assert limits.limiter_for(reloaded.ports[1]).retry_after("192.0.2.1") is not None
    changed = config(b=6)  # a new limit starts afresh
    limits.prepare([changed])
    fresh = limits.limiter_for(changed.ports[1])
    assert fresh is not None and fresh is not b and fresh.retry_after("192.0.2.1") is None
    limits.close()


def test_no_table_for_a_port_that_authenticates_nobody(clock) -> None:
    limits = SharedAuthLimits(clock)
    cfg = parse_config(CONFIG.format(a="", b=5).replace('client_auth = "token"', 'client_auth = "none"', 1))
    limits.prepare([cfg])
    assert limits.limiter_for(cfg.ports[0]) is None
    assert limits.limiter_for(cfg.ports[1]) is not None
    limits.close()
