"""wsserver.security.ratelimit: a token bucket of failed attempts per client, bounded."""

from __future__ import annotations

from wsserver.security.ratelimit import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused_then_refilled() -> None:
    clock = Clock()
    lim = FailureLimiter(burst=3, refill_per_minute=6, clock=clock)  # one back every 10 s
    for _ in range(3):
        assert lim.retry_after("192.0.2.1") is None
        lim.failed("192.0.2.1")
    assert lim.retry_after("192.0.2.1") == 10
    assert lim.retry_after("192.0.2.2") is None  # others are not affected
    clock.now += 4
    assert lim.retry_after("192.0.2.1") == 6
    clock.now += 6
    assert lim.retry_after("192.0.2.1") is None
    lim.failed("192.0.2.1")
    assert lim.retry_after("192.0.2.1") == 10


def test_refusals_do_not_count_but_failures_keep_it_empty() -> None:
    clock = Clock()
    lim = FailureLimiter(burst=1, refill_per_minute=60, clock=clock)
    lim.failed("192.0.2.1")
    for _ in range(100):
        assert lim.retry_after("192.0.2.1") == 1
    clock.now += 1
    assert lim.retry_after("192.0.2.1") is None


def test_ipv6_clients_count_per_prefix_and_mapped_ipv4_as_ipv4() -> None:
    lim = FailureLimiter(burst=1, refill_per_minute=1, clock=Clock())
    lim.failed("2001:db8:1:2::1")
    assert lim.retry_after("2001:db8:1:2:ffff::9") is not None
    assert lim.retry_after("2001:db8:1:3::1") is None
    lim.failed("::ffff:192.0.2.7")
    assert lim.retry_after("192.0.2.7") is not None
    assert lim.key("fe80::1%eth0") == "fe80::/64"


def test_memory_is_bounded() -> None:
    clock = Clock()
    lim = FailureLimiter(burst=5, refill_per_minute=1, max_clients=100, clock=clock)
    for i in range(10_000):
        lim.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(lim) <= 100
    assert lim.retry_after("10.0.39.15") is None or len(lim) <= 100


def test_full_buckets_are_forgotten() -> None:
    clock = Clock()
    lim = FailureLimiter(burst=2, refill_per_minute=60, clock=clock)
    for i in range(50):
        lim.failed(f"192.0.2.{i}")
    clock.now += 10  # everyone refilled
    lim.failed("198.51.100.1")
    lim.failed("198.51.100.2")
    assert len(lim) < 50


def test_from_config_zero_burst_means_off() -> None:
    class Cfg:
        burst = 0
        refill_per_minute = 6.0
        max_clients = 10
        ipv6_prefix = 64

    assert FailureLimiter.from_config(Cfg()) is None
    Cfg.burst = 2
    assert FailureLimiter.from_config(Cfg()).burst == 2
