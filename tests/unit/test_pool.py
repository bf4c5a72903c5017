"""The executor pools and the priority scheduler, on a gevent hub without sockets."""

from __future__ import annotations

import time

import gevent
import pytest

from wsserver.config import PoolConfig
from wsserver.runtime.pool import ExecutorPool, Scheduler, nice_for_priority


def _pool(scheduler: Scheduler, name: str = "p", **kwargs) -> ExecutorPool:
    return ExecutorPool(name, PoolConfig(**kwargs), scheduler)


def test_min_executors_are_started_warm():
    scheduler = Scheduler()
    pool = _pool(scheduler, min=4, max=10)
    gevent.sleep(0.01)
    assert pool.alive == 4 and pool.busy == 0
    scheduler.stop()


def test_grows_to_max_and_shrinks_back_to_min():
    scheduler = Scheduler()
    pool = _pool(scheduler, min=1, max=3, idle_shrink_ms=100)
    running, peak = [0], [0]

    def task() -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        gevent.sleep(0.05)
        running[0] -= 1

    done: list[BaseException | None] = []
    for _ in range(10):
        pool.submit(task, done=done.append)
    gevent.sleep(0.02)
    assert pool.alive == 3 and pool.busy == 3 and len(pool.pending) == 7
    while len(done) < 10:
        gevent.sleep(0.01)
    assert peak[0] == 3 and done == [None] * 10
    gevent.sleep(0.4)
    assert pool.alive == 1  # idle executors beyond min retired
    scheduler.stop()


def test_exception_is_reported_and_executor_survives():
    scheduler = Scheduler()
    pool = _pool(scheduler, min=1, max=1)

    def boom() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError):
        pool.call(boom, timeout=2)
    assert pool.call(lambda: 42, timeout=2) == 42
    assert pool.alive == 1
    scheduler.stop()


def test_call_times_out():
    scheduler = Scheduler()
    pool = _pool(scheduler, min=1, max=1)
    with pytest.raises(gevent.Timeout):
        pool.call(gevent.sleep, 1.0, timeout=0.05)
    scheduler.stop()


def test_higher_priority_work_starts_first_when_saturated():
    scheduler = Scheduler()
    low = _pool(scheduler, "low", min=1, max=1, priority=1)
    high = _pool(scheduler, "high", min=1, max=1, priority=9)
    order: list[str] = []

    def work(name: str) -> None:
        order.append(name)
        end = time.perf_counter() + 0.01
        while time.perf_counter() < end:  # CPU-bound: priority decides who gets the CPU first
            pass

    # Both pools have queued work: low's was queued first, yet high's runs first.
    for i in range(3):
        low.submit(work, f"low{i}")
    for i in range(3):
        high.submit(work, f"high{i}")
    gevent.sleep(0.3)
    assert order == ["high0", "high1", "high2", "low0", "low1", "low2"]
    assert high.stats.mean_wait < low.stats.mean_wait
    scheduler.stop()


def test_thread_mode_runs_on_os_threads_and_returns_to_the_hub():
    import threading

    scheduler = Scheduler()
    pool = _pool(scheduler, min=2, max=4, mode="thread")
    hub_thread = threading.get_ident()
    from gevent.monkey import get_original

    native_ident = get_original("_thread", "get_ident")
    ident = pool.call(native_ident, timeout=5)
    assert ident != native_ident() or ident != hub_thread
    # A native blocking sleep in a thread does not block the hub.
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0.01) for _ in range(20)])
    pool.call(get_original("time", "sleep"), 0.2, timeout=5)
    ticker.join()
    assert len(ticks) >= 10
    scheduler.stop()


@pytest.mark.parametrize(("priority", "nice"), [(5, 0), (10, -5), (1, 4)])
def test_nice_mapping(priority, nice):
    assert nice_for_priority(priority) == nice
