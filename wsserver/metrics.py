"""Every Prometheus metric of wsserver, defined once, and how they cross process boundaries.

prometheus-client runs in **multiprocess mode**: the master creates a private directory before
it forks anything (:func:`setup_multiprocess`, which also sets ``PROMETHEUS_MULTIPROC_DIR``),
each worker writes its values into its own memory-mapped files there, and the master's
``/metrics`` merges them (:class:`MasterCollector`): counters and histograms are summed,
gauges follow their ``multiprocess_mode`` (``livesum``: only live workers count).

When the master reaps a worker, :func:`process_dead` removes the dead pid's live-gauge files
(``mark_process_dead``) and folds its counter and histogram files into one ``*_archive.db``
file per type, then deletes them: aggregated counters never go down, dead workers' gauges stop
counting, and the directory holds at most one file per type per live worker plus the archive,
however often workers restart.

The hot path never touches prometheus-client. A worker counts into plain attributes of a
:class:`PortStats` bound to the port once (``stats.messages_in += 1`` costs ~0.04 µs, a
multiprocess ``Counter.inc`` ~1.8 µs and a ``Histogram.observe`` ~5 µs, with a lock and an mmap
write each); :meth:`PortMetrics.publish` moves the deltas into the port's pre-bound metric
children every :data:`FLUSH_INTERVAL` seconds and when the worker stops. So ``/metrics`` lags
by at most that interval, and a worker killed with SIGKILL loses at most its last interval.

Metrics written by the master itself (workers, restarts, reloads, build info, certificate
expiry, process metrics) are not files: :class:`MasterCollector` computes them at scrape time.

Label values are bounded: ``port`` is a configured alias, ``reason``/``result``/``method``/
``state`` are fixed words, close codes outside the registered range are grouped
(:func:`close_code_label`), and adapter ``server`` labels are capped per adapter.

Why one long module: every metric is defined here once, next to the multiprocess merge that
must know each one's type and mode; the definitions are most of the file.
"""

from __future__ import annotations

import fcntl
import glob
import os
import platform
import shutil
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector

from wsserver.protocol.address import format_host

FLUSH_INTERVAL = 1.0  # seconds between a worker's publications (and the most /metrics lags)
ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
ARCHIVE = "archive"  # counter_archive.db, histogram_archive.db: the totals of dead workers

# ---- buckets (seconds) ----------------------------------------------------------------------
HANDSHAKE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SESSION_BUCKETS = (0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0)
POOL_WAIT_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
)
AUTH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BROKER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)
ADAPTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# ---- the metrics the workers write (files; merged by the master) ----------------------------
# registry=None: nothing registers globally; the master's collector reads the files.

CONNECTIONS_ACCEPTED = Counter(
    "wsserver_connections_accepted_total",
    "WebSocket handshakes accepted (101 sent).",
    ["port"],
    registry=None,
)
CONNECTIONS_REJECTED = Counter(
    "wsserver_connections_rejected_total",
    "Connections refused by an IP rule or during the handshake, by reason.",
    ["port", "reason"],
    registry=None,
)
CONNECTIONS_ACTIVE = Gauge(
    "wsserver_connections_active",
    "Open WebSocket sessions.",
    ["port"],
    multiprocess_mode="livesum",
    registry=None,
)
HANDSHAKE_DURATION = Histogram(
    "wsserver_handshake_duration_seconds",
    "From accept to the 101 response (TLS and authentication included), accepted handshakes only.",
    ["port"],
    buckets=HANDSHAKE_BUCKETS,
    registry=None,
)
MESSAGES_RECEIVED = Counter(
    "wsserver_messages_received_total",
    "Complete WebSocket messages received from clients.",
    ["port"],
    registry=None,
)
MESSAGES_SENT = Counter(
    "wsserver_messages_sent_total",
    "WebSocket messages sent to clients (broadcasts included).",
    ["port"],
    registry=None,
)
BYTES_RECEIVED = Counter(
    "wsserver_bytes_received_total",
    "Bytes of the WebSocket data phase read from clients (frames as sent, after TLS).",
    ["port"],
    registry=None,
)
BYTES_SENT = Counter(
    "wsserver_bytes_sent_total",
    "Bytes of the WebSocket data phase written to clients (before TLS).",
    ["port"],
    registry=None,
)
SESSION_DURATION = Histogram(
    "wsserver_session_duration_seconds",
    "Lifetime of ended WebSocket sessions.",
    ["port"],
    buckets=SESSION_BUCKETS,
    registry=None,
)
CLOSE_CODES = Counter(
    "wsserver_close_codes_total",
    "Ended sessions by close code (1006 = no closing handshake; 3xxx/4xxx/other grouped).",
    ["port", "code"],
    registry=None,
)
POOL_EXECUTORS = Gauge(
    "wsserver_pool_executors",
    "Executors of the port's pool, by state (busy, idle).",
    ["port", "state"],
    multiprocess_mode="livesum",
    registry=None,
)
POOL_QUEUE_DEPTH = Gauge(
    "wsserver_pool_queue_depth",
    "Tasks waiting for an executor of the port's pool.",
    ["port"],
    multiprocess_mode="livesum",
    registry=None,
)
POOL_WAIT = Histogram(
    "wsserver_pool_wait_seconds",
    "Time a task waited for an executor of the port's pool.",
    ["port"],
    buckets=POOL_WAIT_BUCKETS,
    registry=None,
)
AUTH_ATTEMPTS = Counter(
    "wsserver_auth_attempts_total",
    "Client authentication attempts by method and result.",
    ["port", "method", "result"],
    registry=None,
)
AUTH_DURATION = Histogram(
    "wsserver_auth_duration_seconds",
    "Duration of client authentication attempts.",
    ["port", "method"],
    buckets=AUTH_BUCKETS,
    registry=None,
)
ADAPTER_REQUESTS = Counter(
    "wsserver_adapter_requests_total",
    "Requests of authentication adapters to their servers, by result.",
    ["adapter", "server", "result"],
    registry=None,
)
ADAPTER_REQUEST_DURATION = Histogram(
    "wsserver_adapter_request_duration_seconds",
    "Duration of authentication adapter requests.",
    ["adapter", "server"],
    buckets=ADAPTER_BUCKETS,
    registry=None,
)
ADAPTER_SERVER_PENALTY = Gauge(
    "wsserver_adapter_server_penalty",
    "Current penalty of an adapter server (0 = healthy), the highest any live worker sees.",
    ["adapter", "server"],
    multiprocess_mode="livemax",
    registry=None,
)
HEALTH_CHECKS = Counter(
    "wsserver_health_checks_total",
    "Plain GET requests of a WebSocket port's health_path answered 200.",
    ["port"],
    registry=None,
)
BROKER_UP = Gauge(
    "wsserver_broker_up",
    "[cluster]: 1 while every live worker's subscriber is connected to Redis, else 0 (the lowest of the workers).",
    ["node"],
    multiprocess_mode="livemin",
    registry=None,
)
BROKER_PUBLISH_ERRORS = Counter(
    "wsserver_broker_publish_errors_total",
    "[cluster]: broadcasts that failed because Redis was unavailable (the endpoint got BrokerUnavailable).",
    ["node"],
    registry=None,
)
BROKER_RECONNECTS = Counter(
    "wsserver_broker_reconnects_total",
    "[cluster]: subscriber connections to Redis re-established after a loss.",
    ["node"],
    registry=None,
)
BROKER_PUBLISHED = Counter(
    "wsserver_broker_published_total", "[cluster]: broadcasts handed to Redis.", ["node"], registry=None
)
BROKER_PUBLISH_DURATION = Histogram(
    "wsserver_broker_publish_seconds",
    "[cluster]: one broadcast's round trip to Redis (PUBLISH, or the history script).",
    ["node"],
    buckets=BROKER_BUCKETS,
    registry=None,
)
BROKER_RECEIVED = Counter(
    "wsserver_broker_received_total",
    "[cluster]: group messages a worker received from Redis for its members (once per worker, not per member).",
    ["node"],
    registry=None,
)
BROKER_CAUGHT_UP = Counter(
    "wsserver_broker_caught_up_total",
    "[cluster]: messages a worker read from a group's history after its subscriber reconnected.",
    ["node"],
    registry=None,
)
BROKER_GAPS = Counter(
    "wsserver_broker_gaps_total",
    "[cluster]: groups whose history no longer reached back to what a worker last received when it "
    "reconnected (its members missed messages).",
    ["node"],
    registry=None,
)

WORKER_METRICS = (
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_REJECTED,
    CONNECTIONS_ACTIVE,
    HANDSHAKE_DURATION,
    MESSAGES_RECEIVED,
    MESSAGES_SENT,
    BYTES_RECEIVED,
    BYTES_SENT,
    SESSION_DURATION,
    CLOSE_CODES,
    POOL_EXECUTORS,
    POOL_QUEUE_DEPTH,
    POOL_WAIT,
    AUTH_ATTEMPTS,
    AUTH_DURATION,
    ADAPTER_REQUESTS,
    ADAPTER_REQUEST_DURATION,
    ADAPTER_SERVER_PENALTY,
    HEALTH_CHECKS,
    BROKER_UP,
    BROKER_PUBLISH_ERRORS,
    BROKER_RECONNECTS,
    BROKER_PUBLISHED,
    BROKER_PUBLISH_DURATION,
    BROKER_RECEIVED,
    BROKER_CAUGHT_UP,
    BROKER_GAPS,
)


# ---- the metrics the master computes at scrape time -----------------------------------------
@dataclass(frozen=True)
class MasterMetric:
    name: str  # as exposed (counters with _total)
    type: str
    help: str
    labels: tuple[str, ...] = ()


WORKERS = MasterMetric(
    "wsserver_workers",
    "gauge",
    "Worker processes by state (starting, ready, draining, stopping).",
    ("state",),
)
WORKERS_TARGET = MasterMetric(
    "wsserver_workers_target", "gauge", "Worker processes the master keeps running."
)
WORKER_RESTARTS = MasterMetric(
    "wsserver_worker_restarts_total",
    "counter",
    "Workers that died unexpectedly (crash, kill, heartbeat timeout) and were replaced.",
)
CONFIG_RELOADS = MasterMetric(
    "wsserver_config_reloads_total",
    "counter",
    "Configuration reloads (HUP) by result: success, invalid, failed.",
    ("result",),
)
BUILD_INFO = MasterMetric(
    "wsserver_build_info", "info", "wsserver version and Python version.", ("version", "python")
)
TLS_EXPIRY = MasterMetric(
    "wsserver_tls_certificate_expiry_seconds",
    "gauge",
    "Seconds until the certificate of a keystore key expires (negative: expired).",
    ("keystore", "key_alias"),
)
MASTER_METRICS = (WORKERS, WORKERS_TARGET, WORKER_RESTARTS, CONFIG_RELOADS, BUILD_INFO, TLS_EXPIRY)
RELOAD_RESULTS = ("success", "invalid", "failed")
WORKER_STATES = ("starting", "ready", "draining", "stopping")

PROCESS_METRICS = (
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
)


def exposed_names() -> list[str]:
    """Every metric family name /metrics shows (counters with ``_total``), for docs and tests."""
    names = []
    for metric in WORKER_METRICS:
        # prometheus_client annotates describe() as Iterable; it returns a one-element list.
        family = metric.describe()[0]  # type: ignore[index]
        names.append(family.name + "_total" if family.type == "counter" else family.name)
    names += [m.name for m in MASTER_METRICS]
    return names + list(PROCESS_METRICS)


# ---- label helpers --------------------------------------------------------------------------
def close_code_label(code: int | None) -> str:
    """A bounded label for a close code: the registered 1000-1015 as is, else a group."""
    if code is None:
        return "1006"
    if 1000 <= code <= 1015:
        return str(code)
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"


# ---- a worker's hot-path accounting ---------------------------------------------------------
class LocalHistogram:
    """Observations counted into plain lists, published later as a delta of a Histogram child."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value equal to a bound is in it
        self.total += value

    def take(self) -> tuple[list[int], float]:
        counts, total = self.counts, self.total
        self.counts, self.total = [0] * len(counts), 0.0
        return counts, total


def add_to_histogram(child: Any, counts: Sequence[int], total: float) -> None:
    """Add bucket counts (not cumulative, +Inf last) and their sum to a Histogram child.

    Uses the child's ``_buckets``/``_sum`` values (prometheus-client has no batch API); the
    unit tests check the exposition this gives, so a change there fails loudly.
    """
    if not any(counts):
        return
    buckets = child._buckets
    if len(buckets) != len(counts):
        raise ValueError(f"{len(counts)} bucket counts for a histogram with {len(buckets)} buckets")
    for value, n in zip(buckets, counts, strict=True):
        if n:
            value.inc(n)
    child._sum.inc(total)


class PortStats:
    """One port's counts in one worker since the last publication; plain attributes, hub only.

    Sessions and the dispatcher add to these (a few tens of nanoseconds each); the pool's
    wait times are in ``ExecutorPool.stats``. :meth:`PortMetrics.publish` takes and resets them.
    """

    __slots__ = (
        "accepted",
        "auth",
        "auth_durations",
        "bytes_in",
        "bytes_out",
        "close_codes",
        "handshake",
        "health_checks",
        "messages_in",
        "messages_out",
        "rejected",
        "session",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.health_checks = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.rejected: dict[str, int] = {}
        self.close_codes: dict[str, int] = {}
        self.handshake = LocalHistogram(HANDSHAKE_BUCKETS)
        self.session = LocalHistogram(SESSION_BUCKETS)
        self.auth: dict[tuple[str, str], int] = {}
        self.auth_durations: dict[str, LocalHistogram] = {}

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def handshake_done(self, seconds: float) -> None:
        self.accepted += 1
        self.handshake.observe(seconds)

    def session_ended(self, code: int | None, seconds: float) -> None:
        label = close_code_label(code)
        self.close_codes[label] = self.close_codes.get(label, 0) + 1
        self.session.observe(seconds)

    def auth_observer(self, event: Any) -> None:
        """``Authenticator(observer=...)``: one finished attempt (a ``security.auth.AuthEvent``)."""
        key = (event.method, event.result)
        self.auth[key] = self.auth.get(key, 0) + 1
        hist = self.auth_durations.get(event.method)
        if hist is None:
            hist = self.auth_durations[event.method] = LocalHistogram(AUTH_BUCKETS)
        hist.observe(event.duration)


class PortMetrics:
    """One port's metric children in this worker, bound once (``.labels()`` is never on the hot path)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.accepted = CONNECTIONS_ACCEPTED.labels(alias)
        self.active = CONNECTIONS_ACTIVE.labels(alias)
        self.handshake = HANDSHAKE_DURATION.labels(alias)
        self.messages_in = MESSAGES_RECEIVED.labels(alias)
        self.messages_out = MESSAGES_SENT.labels(alias)
        self.bytes_in = BYTES_RECEIVED.labels(alias)
        self.bytes_out = BYTES_SENT.labels(alias)
        self.session = SESSION_DURATION.labels(alias)
        self.health = HEALTH_CHECKS.labels(alias)
        self.busy = POOL_EXECUTORS.labels(alias, "busy")
        self.idle = POOL_EXECUTORS.labels(alias, "idle")
        self.queue = POOL_QUEUE_DEPTH.labels(alias)
        self.pool_wait = POOL_WAIT.labels(alias)
        self._pool_counts: list[int] | None = None  # the pool's wait counts at the last publication
        self._pool_wait_total = 0.0
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.alias, *labels)
        return child

    def publish(self, stats: PortStats, active: int, pool: Any = None) -> None:
        """Move what ``stats`` counted into the metric files; set the gauges."""
        for attr, child in (
            ("accepted", self.accepted),
            ("health_checks", self.health),
            ("messages_in", self.messages_in),
            ("messages_out", self.messages_out),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
        ):
            n = getattr(stats, attr)
            if n:
                setattr(stats, attr, 0)
                child.inc(n)
        if stats.rejected:
            rejected, stats.rejected = stats.rejected, {}
            for reason, n in rejected.items():
                self._child(CONNECTIONS_REJECTED, reason).inc(n)
        if stats.close_codes:
            codes, stats.close_codes = stats.close_codes, {}
            for code, n in codes.items():
                self._child(CLOSE_CODES, code).inc(n)
        if stats.auth:
            auth, stats.auth = stats.auth, {}
            for (method, result), n in auth.items():
                self._child(AUTH_ATTEMPTS, method, result).inc(n)
        for method, hist in stats.auth_durations.items():
            add_to_histogram(self._child(AUTH_DURATION, method), *hist.take())
        add_to_histogram(self.handshake, *stats.handshake.take())
        add_to_histogram(self.session, *stats.session.take())
        self.active.set(active)
        if pool is not None:
            self._publish_pool(pool)

    def _publish_pool(self, pool: Any) -> None:
        busy = pool.busy
        self.busy.set(busy)
        self.idle.set(max(0, pool.alive - busy))
        self.queue.set(len(pool.pending))
        # The pool keeps running totals (ExecutorPool.stats): publish what grew since last time.
        stats = pool.stats
        counts = list(stats.wait_buckets)
        before = self._pool_counts or [0] * len(counts)
        delta = [now - then for now, then in zip(counts, before, strict=True)]
        total = stats.wait_total - self._pool_wait_total
        self._pool_counts, self._pool_wait_total = counts, stats.wait_total
        add_to_histogram(self.pool_wait, delta, total)


# ---- adapters (any thread) ------------------------------------------------------------------
MAX_SERVERS_PER_ADAPTER = 32  # more distinct server labels (OCSP AIA responders) go to "other"
_adapter_lock = threading.Lock()
_adapter_servers: dict[str, set[str]] = {}


def server_label(adapter: str, server: str) -> str:
    """The URL without user info, at most MAX_SERVERS_PER_ADAPTER distinct ones per adapter."""
    try:
        parts = urlsplit(server)
        if parts.username is not None or parts.password is not None:
            host = parts.hostname or ""
            netloc = format_host(host)
            if parts.port is not None:
                netloc += f":{parts.port}"
            server = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        server = "invalid"
    with _adapter_lock:
        seen = _adapter_servers.setdefault(adapter, set())
        if server in seen:
            return server
        if len(seen) < MAX_SERVERS_PER_ADAPTER:
            seen.add(server)
            return server
    return "other"


def adapter_observer(adapter: str, server: str, result: str, seconds: float, penalty: float) -> None:
    """The ``observer`` of ``wsserver.adapters.Adapter``: one backend request finished.

    Called after every request outside any adapter lock, from greenlets or executor threads;
    adapter calls take milliseconds, so the metrics are written directly.
    """
    label = server_label(adapter, server)
    ADAPTER_REQUESTS.labels(adapter, label, result).inc()
    ADAPTER_REQUEST_DURATION.labels(adapter, label).observe(seconds)
    ADAPTER_SERVER_PENALTY.labels(adapter, label).set(penalty)


# ---- the master: the directory, dead workers, the scrape ------------------------------------
DIR_PREFIX = "wsserver-metrics-"
LOCK_FILE = "lock"  # held (flock) by the master and its workers while they live; not *.db
_lock_fds: dict[str, int] = {}


def setup_multiprocess(path: str | None = None) -> str:
    """Create the private directory (unless given), point prometheus-client at it; before any fork.

    Values created from now on, in this process or a forked child, live in ``<type>_<pid>.db``
    files there. An inherited ``PROMETHEUS_MULTIPROC_DIR`` is replaced: the directory must
    belong to this master alone. Directories left by masters that were killed (SIGKILL: no
    clean-up) are removed first: their lock file is no longer held by anyone.
    """
    if path is None:
        remove_stale_dirs()
        path = _make_locked_dir()
    os.environ[ENV_DIR] = path
    values.ValueClass = values.MultiProcessValue()
    return path


def _make_locked_dir(tmpdir: str | None = None) -> str:
    # Created under another name and renamed once locked: a directory with the final prefix
    # always has its lock held (or its owners are gone), so no master removes a live one.
    tmp = tempfile.mkdtemp(prefix="." + DIR_PREFIX + "new-", dir=tmpdir)
    fd = os.open(os.path.join(tmp, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    path = os.path.join(os.path.dirname(tmp), DIR_PREFIX + os.path.basename(tmp).rsplit("-", 1)[1])
    os.rename(tmp, path)
    _lock_fds[path] = fd
    return path


def remove_stale_dirs(tmpdir: str | None = None) -> list[str]:
    """Remove this user's metrics directories whose lock nobody holds; the removed paths."""
    removed = []
    for path in glob.glob(os.path.join(tmpdir or tempfile.gettempdir(), DIR_PREFIX + "*")):
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR)
        except OSError:
            continue  # not ours, or not one of ours with a lock: leave it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live master (or its workers) holds it
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def remove_multiprocess_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    fd = _lock_fds.pop(path, None)
    if fd is not None:
        os.close(fd)
    if os.environ.get(ENV_DIR) == path:
        del os.environ[ENV_DIR]


def process_dead(pid: int, path: str) -> None:
    """A reaped worker: drop its live gauges, fold its counters and histograms into the archive."""
    mark_process_dead(pid, path)
    for typ in ("counter", "histogram"):
        src = os.path.join(path, f"{typ}_{pid}.db")
        if not os.path.exists(src):
            continue
        archive = MmapedDict(os.path.join(path, f"{typ}_{ARCHIVE}.db"))
        try:
            for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(src):
                if value:
                    before, _ = archive.read_value(key)
                    archive.write_value(key, before + value, 0.0)
        finally:
            archive.close()
        os.remove(src)
    # Gauges of other modes (none are defined here) would keep their files: remove them too.
    for leftover in glob.glob(os.path.join(path, f"gauge_*_{pid}.db")):
        os.remove(leftover)


@dataclass
class WorkerInfo:
    pid: int
    slot: int
    gen: int
    state: str  # starting | ready | draining | stopping


@dataclass
class MasterState:
    """What the master knows at scrape time."""

    workers: list[WorkerInfo] = field(default_factory=list)
    target: int = 0
    restarts: int = 0
    reloads: dict[str, int] = field(default_factory=dict)
    certificates: list[tuple[str, str, float]] = field(default_factory=list)  # keystore, alias, not-after


class MasterCollector:
    """The aggregated /metrics: the workers' files plus what the master computes."""

    def __init__(self, path: str, state: Callable[[], MasterState]) -> None:
        self.path = path
        self.state = state
        self._process = ProcessCollector(pid=lambda: self._pid, registry=None)
        self._pid: int | str = "self"

    def collect(self) -> Iterator[Metric]:
        yield from self.collect_files()
        state = self.state()
        yield from self.collect_master(state)
        yield from self.collect_processes(state)

    def collect_files(self) -> Iterator[Metric]:
        files = glob.glob(os.path.join(self.path, "*.db"))
        found = {m.name: m for m in MultiProcessCollector.merge(files, accumulate=True)}
        for metric in WORKER_METRICS:
            # prometheus_client annotates describe() as Iterable; it returns a one-element list.
            family = metric.describe()[0]  # type: ignore[index]
            # A family nobody wrote yet still shows its HELP and TYPE: /metrics documents itself.
            yield found.pop(family.name, None) or family
        yield from found.values()

    def collect_master(self, state: MasterState) -> Iterator[Metric]:
        workers = GaugeMetricFamily(WORKERS.name, WORKERS.help, labels=WORKERS.labels)
        for name in WORKER_STATES:
            workers.add_metric([name], sum(1 for w in state.workers if w.state == name))
        yield workers
        yield GaugeMetricFamily(WORKERS_TARGET.name, WORKERS_TARGET.help, value=state.target)
        yield CounterMetricFamily(WORKER_RESTARTS.name, WORKER_RESTARTS.help, value=state.restarts)
        reloads = CounterMetricFamily(CONFIG_RELOADS.name, CONFIG_RELOADS.help, labels=CONFIG_RELOADS.labels)
        for result in RELOAD_RESULTS:
            reloads.add_metric([result], state.reloads.get(result, 0))
        yield reloads
        info = InfoMetricFamily(BUILD_INFO.name.removesuffix("_info"), BUILD_INFO.help)
        from wsserver.version import __version__

        info.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield info
        expiry = GaugeMetricFamily(TLS_EXPIRY.name, TLS_EXPIRY.help, labels=TLS_EXPIRY.labels)
        now = time.time()
        for keystore, alias, not_after in state.certificates:
            expiry.add_metric([keystore, alias], round(not_after - now, 3))
        yield expiry

    def collect_processes(self, state: MasterState) -> Iterator[Metric]:
        """The standard process metrics of the master and of every worker, told apart by labels."""
        families: dict[str, Metric] = {}
        targets: list[tuple[int | str, dict[str, str]]] = [("self", {"process": "master"})]
        targets += [
            (w.pid, {"process": "worker", "slot": str(w.slot), "generation": str(w.gen)})
            for w in state.workers
        ]
        for pid, labels in targets:
            self._pid = pid
            try:
                collected = list(self._process.collect())
            except OSError:
                continue  # gone between the reap and now
            for family in collected:
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, **labels}, sample.value)
        self._pid = "self"
        yield from families.values()


def make_registry(collector: MasterCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The exposition (Prometheus text, or OpenMetrics if ``accept`` asks for it) and its content type."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def certificates_of(config: Any) -> list[tuple[str, str, float]]:
    """(keystore, key_alias, not-after as epoch seconds) of every key the config's keystores hold."""
    from wsserver.security.tls import tls_for_config, uses_tls

    if not uses_tls(config):
        return []
    now = time.time()
    return [
        (store, alias, now + seconds) for store, alias, seconds in tls_for_config(config).expiry_seconds()
    ]


def names_in(text: str) -> set[str]:
    """Metric family names that appear in an exposition (HELP/TYPE lines and samples)."""
    found = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            found.add(line.split()[2])
        elif line and not line.startswith("#"):
            found.add(line.split("{", 1)[0].split(" ", 1)[0])
    return found
