"""wsserver.metrics in multiprocess mode: real forked children write metric files the way workers
do; this process only reads them."""

from __future__ import annotations

import itertools
import os

import pytest

from tests.unit.test_metrics import multiproc, scrape  # noqa: F401 - multiproc is a fixture
from wsserver import metrics
from wsserver.runtime.pool import PoolStats

pytestmark = pytest.mark.integration


_aliases = itertools.count(1)


def unique_alias() -> str:
    # Metric children are cached per label value for the process: every test gets its own.
    return f"unit{next(_aliases)}-{os.getpid()}"


def run_worker(fn) -> int:
    """Fork a child that runs ``fn`` (writing metric files under its own pid) and exits; its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


class FakePool:
    def __init__(self) -> None:
        self.busy, self.alive, self.pending, self.stats = 2, 5, [1, 2, 3], PoolStats()


def test_publish_moves_counts_and_sets_gauges(multiproc):  # noqa: F811
    alias = unique_alias()

    def worker():
        stats = metrics.PortStats()
        port = metrics.PortMetrics(alias)
        stats.messages_in += 7
        stats.bytes_in += 70
        stats.reject("not_found")
        stats.reject("not_found")
        stats.handshake_done(0.002)
        stats.session_ended(1000, 3.0)
        stats.session_ended(4321, 0.5)
        stats.auth_observer(type("E", (), {"method": "token", "result": "invalid", "duration": 0.001})())
        pool = FakePool()
        pool.stats.record_start(0.0)  # queued at monotonic 0: waited "forever" (the +Inf bucket)
        port.publish(stats, active=3, pool=pool)
        assert stats.messages_in == 0 and not stats.rejected  # taken
        port.publish(stats, active=3, pool=pool)  # nothing new: nothing added twice

    pid = run_worker(worker)
    got = scrape(multiproc)
    lab = (("port", alias),)
    assert got[("wsserver_messages_received_total", lab)] == 7
    assert got[("wsserver_bytes_received_total", lab)] == 70
    assert got[("wsserver_connections_accepted_total", lab)] == 1
    assert got[("wsserver_connections_rejected_total", (("port", alias), ("reason", "not_found")))] == 2
    assert got[("wsserver_close_codes_total", (("code", "1000"), ("port", alias)))] == 1
    assert got[("wsserver_close_codes_total", (("code", "4xxx"), ("port", alias)))] == 1
    assert got[("wsserver_session_duration_seconds_count", lab)] == 2
    assert (
        got[("wsserver_auth_attempts_total", (("method", "token"), ("port", alias), ("result", "invalid")))]
        == 1
    )
    assert got[("wsserver_connections_active", lab)] == 3
    assert got[("wsserver_pool_executors", (("port", alias), ("state", "busy")))] == 2
    assert got[("wsserver_pool_executors", (("port", alias), ("state", "idle")))] == 3
    assert got[("wsserver_pool_queue_depth", lab)] == 3
    assert got[("wsserver_pool_wait_seconds_count", lab)] == 1
    assert got[("wsserver_pool_wait_seconds_bucket", (("le", "+Inf"), ("port", alias)))] == 1
    metrics.process_dead(pid, multiproc)


def test_a_dead_workers_counters_stay_and_its_gauges_go(multiproc):  # noqa: F811
    alias = unique_alias()

    def worker(n: int):
        def body():
            stats = metrics.PortStats()
            stats.messages_in += n
            stats.handshake_done(0.01)
            metrics.PortMetrics(alias).publish(stats, active=n)

        return body

    lab = (("port", alias),)
    first = run_worker(worker(5))
    before = scrape(multiproc)
    assert before[("wsserver_messages_received_total", lab)] == 5
    assert before[("wsserver_connections_active", lab)] == 5  # not reaped yet

    metrics.process_dead(first, multiproc)
    after = scrape(multiproc)
    assert after[("wsserver_messages_received_total", lab)] == 5  # kept in the archive
    assert after[("wsserver_handshake_duration_seconds_count", lab)] == 1
    assert ("wsserver_connections_active", lab) not in after  # its gauge no longer counts
    assert sorted(os.listdir(multiproc)) == ["counter_archive.db", "histogram_archive.db"]

    second = run_worker(worker(2))
    metrics.process_dead(second, multiproc)
    final = scrape(multiproc)
    assert final[("wsserver_messages_received_total", lab)] == 7  # added, never lower
    assert final[("wsserver_handshake_duration_seconds_count", lab)] == 2
    assert sorted(os.listdir(multiproc)) == ["counter_archive.db", "histogram_archive.db"]  # no leak


def test_directories_of_killed_masters_are_removed(tmp_path):
    held = metrics._make_locked_dir(str(tmp_path))  # this process: a live master
    pid = os.fork()
    if pid == 0:  # a master that dies without cleaning up
        metrics._make_locked_dir(str(tmp_path))
        os._exit(0)
    os.waitpid(pid, 0)
    foreign = tmp_path / (metrics.DIR_PREFIX + "nolock")  # not made by this code: left alone
    foreign.mkdir()
    assert len(list(tmp_path.glob(metrics.DIR_PREFIX + "*"))) == 3
    removed = metrics.remove_stale_dirs(str(tmp_path))
    assert len(removed) == 1 and removed[0] != held
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([os.path.basename(held), foreign.name])
    metrics.remove_multiprocess_dir(held)
    assert not os.path.exists(held) and held not in metrics._lock_fds
