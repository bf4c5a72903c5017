"""wsserver.metrics: hot-path accounting, publication, multiprocess files of dead workers.

The multiprocess parts fork real child processes that write metric files the way workers do;
this process only reads them (it never creates a value in multiprocess mode itself).
"""

from __future__ import annotations

import itertools
import os
import timeit

import pytest
from prometheus_client import Histogram, generate_latest, values
from prometheus_client.parser import text_string_to_metric_families

from wsserver import metrics
from wsserver.runtime.pool import PoolStats

_aliases = itertools.count(1)


def unique_alias() -> str:
    # Metric children are cached per label value for the process: every test gets its own.
    return f"unit{next(_aliases)}-{os.getpid()}"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


@pytest.fixture
def multiproc(tmp_path):
    """Multiprocess mode in a temp dir, as the master sets it up; restored afterwards."""
    saved_class, saved_env = values.ValueClass, os.environ.get(metrics.ENV_DIR)
    path = metrics.setup_multiprocess(str(tmp_path))
    yield path
    values.ValueClass = saved_class
    if saved_env is None:
        os.environ.pop(metrics.ENV_DIR, None)
    else:
        os.environ[metrics.ENV_DIR] = saved_env


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


def scrape(path: str, state: metrics.MasterState | None = None) -> dict:
    collector = metrics.MasterCollector(path, lambda: state or metrics.MasterState())
    return samples(generate_latest(metrics.make_registry(collector)).decode())


class FakePool:
    def __init__(self) -> None:
        self.busy, self.alive, self.pending, self.stats = 2, 5, [1, 2, 3], PoolStats()


def test_close_code_labels_are_bounded():
    assert [metrics.close_code_label(c) for c in (1000, 1001, 1006, 1015, None)] == \
        ["1000", "1001", "1006", "1015", "1006"]
    assert {metrics.close_code_label(c) for c in range(3000, 5000)} == {"3xxx", "4xxx"}
    assert {metrics.close_code_label(c) for c in (0, 999, 1016, 2999, 5000, 65535)} == {"other"}


def test_server_labels_drop_credentials_and_are_capped():
    assert metrics.server_label("u1", "ldap://cn=x:secret@ldap.test:389/") == "ldap://ldap.test:389/"
    for i in range(metrics.MAX_SERVERS_PER_ADAPTER + 5):
        label = metrics.server_label("aia", f"http://ocsp{i}.test/")
    assert label == "other"
    assert metrics.server_label("aia", "http://ocsp0.test/") == "http://ocsp0.test/"  # a known one stays


def test_local_histogram_buckets_are_le():
    hist = metrics.LocalHistogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        hist.observe(v)
    counts, total = hist.take()
    assert counts == [2, 2, 1] and total == pytest.approx(8.65)
    assert hist.take() == ([0, 0, 0], 0.0)


def test_add_to_histogram_gives_the_same_exposition_as_observe():
    observed = Histogram("unit_observed_seconds", "h", ["port"], buckets=(0.1, 1.0), registry=None)
    batched = Histogram("unit_batched_seconds", "h", ["port"], buckets=(0.1, 1.0), registry=None)
    local = metrics.LocalHistogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        observed.labels("a").observe(v)
        local.observe(v)
    metrics.add_to_histogram(batched.labels("a"), *local.take())

    def buckets(h):
        return [(s.labels.get("le"), s.value) for s in h.collect()[0].samples if s.name.endswith(("bucket", "sum"))]

    assert buckets(observed) == buckets(batched)
    with pytest.raises(ValueError):
        metrics.add_to_histogram(batched.labels("a"), [1, 2], 1.0)


def test_exposed_names_cover_the_issue_list():
    issue = """wsserver_connections_accepted_total wsserver_connections_rejected_total wsserver_connections_active
    wsserver_handshake_duration_seconds wsserver_messages_received_total wsserver_messages_sent_total
    wsserver_bytes_received_total wsserver_bytes_sent_total wsserver_session_duration_seconds
    wsserver_close_codes_total wsserver_pool_executors wsserver_pool_queue_depth wsserver_pool_wait_seconds
    wsserver_auth_attempts_total wsserver_auth_duration_seconds wsserver_adapter_requests_total
    wsserver_adapter_request_duration_seconds wsserver_adapter_server_penalty wsserver_worker_restarts_total
    wsserver_workers wsserver_config_reloads_total wsserver_build_info
    wsserver_tls_certificate_expiry_seconds"""
    issue = issue.split()
    assert set(issue) <= set(metrics.exposed_names())


def test_publish_moves_counts_and_sets_gauges(multiproc):
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
    assert got[("wsserver_auth_attempts_total", (("method", "token"), ("port", alias), ("result", "invalid")))] == 1
    assert got[("wsserver_connections_active", lab)] == 3
    assert got[("wsserver_pool_executors", (("port", alias), ("state", "busy")))] == 2
    assert got[("wsserver_pool_executors", (("port", alias), ("state", "idle")))] == 3
    assert got[("wsserver_pool_queue_depth", lab)] == 3
    assert got[("wsserver_pool_wait_seconds_count", lab)] == 1
    assert got[("wsserver_pool_wait_seconds_bucket", (("le", "+Inf"), ("port", alias)))] == 1
    metrics.process_dead(pid, multiproc)


def test_a_dead_workers_counters_stay_and_its_gauges_go(multiproc):
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


def test_families_without_samples_still_show_help_and_type(multiproc):
    text = generate_latest(metrics.make_registry(
        metrics.MasterCollector(multiproc, lambda: metrics.MasterState(target=2)))).decode()
    found = metrics.names_in(text)
    assert set(metrics.exposed_names()) <= found
    assert "wsserver_workers_target 2.0" in text
    assert 'wsserver_config_reloads_total{result="invalid"} 0.0' in text


def test_master_state_and_process_metrics(multiproc):
    state = metrics.MasterState(
        workers=[metrics.WorkerInfo(os.getpid(), 0, 3, "ready"), metrics.WorkerInfo(os.getpid(), 1, 3, "starting")],
        target=2, restarts=4, reloads={"success": 1},
        certificates=[("main", "server", 1e12)])
    got = scrape(multiproc, state)
    assert got[("wsserver_workers", (("state", "ready"),))] == 1
    assert got[("wsserver_workers", (("state", "starting"),))] == 1
    assert got[("wsserver_worker_restarts_total", ())] == 4
    assert got[("wsserver_config_reloads_total", (("result", "success"),))] == 1
    assert got[("wsserver_tls_certificate_expiry_seconds", (("key_alias", "server"), ("keystore", "main")))] > 0
    assert ("process_cpu_seconds_total", (("process", "master"),)) in got
    assert ("process_resident_memory_bytes", (("generation", "3"), ("process", "worker"), ("slot", "1"))) in got


def test_hot_path_accounting_is_cheap():
    """The per-message statements stay far below a multiprocess Counter.inc (~1.8 µs)."""
    stats = metrics.PortStats()
    pool = PoolStats()

    def per_message():
        stats.bytes_in += 38
        stats.messages_in += 1
        stats.messages_out += 1
        stats.bytes_out += 34
        pool.record_start(0.0)

    n = 20000
    cost = min(timeit.repeat(per_message, number=n, repeat=5)) / n
    assert cost < 2e-6, f"{cost * 1e6:.2f} µs per message"


def test_certificate_expiry_of_a_real_keystore(tmp_path):
    import datetime

    import trustme

    from tests.support.tlsstores import issue, write_pem_files
    from wsserver.config import load_config

    not_after = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(days=10)
    leaf = issue(trustme.CA(), "server", not_after=not_after)
    cert, key = write_pem_files(tmp_path, leaf)
    path = tmp_path / "wsserver.toml"
    path.write_text(f"""
[server.tls]
keystore = "main"
key_alias = "default"
[[keystores]]
alias = "main"
type = "pem"
[keystores.keys.default]
cert = "{cert}"
key = "{key}"
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"
[[ports]]
alias = "secure"
protocol = "wss"
port = 8443
bind = "127.0.0.1"
""")
    [(store, alias, expires)] = metrics.certificates_of(load_config(path))
    assert (store, alias) == ("main", "default")
    assert expires == pytest.approx(not_after.timestamp(), abs=2)
    assert metrics.certificates_of(load_config(None)) == []  # no TLS: nothing to report


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
