"""Per-port executor pools and the worker-wide priority scheduler.

Endpoint callbacks and adapter calls run here, never in the I/O path. A pool keeps ``min``
executors warm, grows to ``max`` while work waits, and shrinks back after ``idle_shrink_ms``.

Priority: all pools of a worker share one CPU. When work waits in several pools, the
scheduler starts tasks one at a time, highest port priority first, letting each started task
run until it blocks before choosing the next. So a busy low-priority port cannot delay a
high-priority port's work by more than the task already running.

``mode = "greenlet"``: executors are greenlets (cooperative handlers, the fast default).
``mode = "thread"``: executors are real OS threads for blocking or C-extension code; results
come back to the hub through a thread-safe callback, so the hub never blocks. Work is handed
over in batches (a session's queued messages), since one hand-off to a thread costs ~50 µs.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.hub import Waiter
from gevent.monkey import get_original

from wsserver.config import PoolConfig
from wsserver.logs import log
from wsserver.metrics import POOL_WAIT_BUCKETS

logger = logging.getLogger("wsserver.pool")

# Real (unpatched) threading primitives: thread-mode executors must block natively.
_start_thread = get_original("_thread", "start_new_thread")
_allocate_lock = get_original("_thread", "allocate_lock")
_native_get_ident = get_original("_thread", "get_ident")

Task = tuple[Callable[..., Any], tuple[Any, ...], "Callable[[BaseException | None], None] | None", float]

_nice_warning_logged = False


def nice_for_priority(priority: int) -> int:
    """Priority 5 is the neutral nice 0; 10 → -5 (needs privileges), 1 → +4."""
    return 5 - priority


class PoolStats:
    """Counters read by metrics and tests: how long tasks waited before they started.

    Running totals; ``wait_buckets`` counts waits per bucket of ``POOL_WAIT_BUCKETS`` (+Inf
    last) for the ``wsserver_pool_wait_seconds`` histogram (``metrics.PortMetrics``).
    """

    __slots__ = ("completed", "max_wait", "started", "wait_buckets", "wait_total")

    def __init__(self) -> None:
        self.started = 0
        self.completed = 0
        self.wait_total = 0.0
        self.max_wait = 0.0
        self.wait_buckets = [0] * (len(POOL_WAIT_BUCKETS) + 1)

    def record_immediate(self) -> None:
        """A task that started as it was submitted: a wait of zero."""
        self.started += 1
        self.wait_buckets[0] += 1

    def record_start(self, queued_at: float) -> None:
        wait = time.monotonic() - queued_at
        self.started += 1
        self.wait_total += wait
        self.wait_buckets[bisect_left(POOL_WAIT_BUCKETS, wait)] += 1
        if wait > self.max_wait:
            self.max_wait = wait

    @property
    def mean_wait(self) -> float:
        return self.wait_total / self.started if self.started else 0.0


class Scheduler:
    """Starts queued tasks across the pools of one worker, highest priority first.

    Dispatch starts ONE task and, if more wait, schedules itself again on a zero-delay timer.
    A timer (not ``run_callback``: gevent runs up to 50 queued callbacks back to back) fires
    after the next poll of the sockets, so work that just arrived on a high-priority port is
    chosen before older work of a lower one.
    """

    def __init__(self) -> None:
        self.pools: list[ExecutorPool] = []
        #: With one pool there is no priority to honour: tasks may start at once.
        self.single = False
        self._dispatch_scheduled = False
        self._tick = gevent.get_hub().loop.timer(0.0)

    def register(self, pool: ExecutorPool) -> None:
        self.pools.append(pool)
        self.pools.sort(key=lambda p: -p.priority)
        self.single = len(self.pools) == 1

    def notify(self) -> None:
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self._tick.start(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        for pool in self.pools:  # highest priority first
            if pool.pending and pool.has_capacity():
                pool.start_pending()  # in greenlet mode the task runs now, until it blocks
                self.notify()
                return

    def stop(self) -> None:
        self._tick.stop()
        for pool in self.pools:
            pool.stop()


class ExecutorPool:
    """The executors of one port."""

    def __init__(self, name: str, cfg: PoolConfig, scheduler: Scheduler) -> None:
        self.name = name
        self.min = cfg.min
        self.max = cfg.max
        self.priority = cfg.priority
        self.mode = cfg.mode
        self.idle_shrink = cfg.idle_shrink_ms / 1000
        self.scheduler = scheduler
        self.pending: deque[Task] = deque()
        self.stats = PoolStats()
        self.alive = 0
        self.busy = 0
        self._stopped = False
        if self.mode == "thread":
            self._impl: _GreenletExecutors | _ThreadExecutors = _ThreadExecutors(self)
        else:
            self._impl = _GreenletExecutors(self)
        scheduler.register(self)
        for _ in range(self.min):
            self._impl.spawn()

    # ---- submitting work ----------------------------------------------------------------
    def submit(
        self, fn: Callable[..., Any], *args: Any, done: Callable[[BaseException | None], None] | None = None
    ) -> None:
        """Run ``fn(*args)`` on an executor; ``done(exc_or_None)`` is called on the hub afterwards."""
        if (
            self.scheduler.single
            and not self.pending
            and not self._stopped
            and (self._impl.has_idle() or self.alive < self.max)
        ):
            # Started at once: it waited for nothing (and the clock need not be read).
            self.busy += 1
            self.stats.record_immediate()
            self._impl.run((fn, args, done, 0.0))
        else:
            self.pending.append((fn, args, done, time.monotonic()))
            self.scheduler.notify()

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run ``fn(*args)`` on the pool and wait (cooperatively) for its result."""
        result: dict[str, Any] = {}
        finished = Event()

        def run() -> None:
            result["value"] = fn(*args)

        def done(exc: BaseException | None) -> None:
            result["error"] = exc
            finished.set()

        self.submit(run, done=done)
        if not finished.wait(timeout):
            raise gevent.Timeout(timeout)
        if result.get("error") is not None:
            raise result["error"]
        return result.get("value")

    # ---- scheduler side -------------------------------------------------------------------
    def has_capacity(self) -> bool:
        """An executor is parked and free, or the pool may grow."""
        return not self._stopped and (self._impl.has_idle() or self.alive < self.max)

    def start_pending(self) -> None:
        self._start(self.pending.popleft())

    def _start(self, task: Task) -> None:
        self.busy += 1
        self.stats.record_start(task[3])
        self._impl.run(task)

    def task_finished(self, task: Task, exc: BaseException | None) -> None:
        """On the hub, after a task ran (either mode)."""
        self.busy -= 1
        self.stats.completed += 1
        done = task[2]
        if done is not None:
            try:
                done(exc)
            except Exception:
                log(logger, "error", "task completion callback failed", exc_info=True, pool=self.name)
        elif exc is not None:
            log(logger, "error", "task failed", exc_info=(type(exc), exc, exc.__traceback__), pool=self.name)
        if self.pending:
            self.scheduler.notify()

    def stop(self) -> None:
        self._stopped = True
        self._impl.stop()

    def describe(self) -> dict[str, Any]:
        return {
            "alive": self.alive,
            "busy": self.busy,
            "queued": len(self.pending),
            "mean_wait_s": self.stats.mean_wait,
            "max_wait_s": self.stats.max_wait,
            "started": self.stats.started,
        }


class _GreenletExecutors:
    """Executors as greenlets parked on a Waiter, most recently parked reused first.

    Shrinking needs no timer per task: while more than ``min`` are alive, one periodic timer
    retires the executors parked for longer than ``idle_shrink`` (those at the bottom of the
    stack of idle ones).
    """

    def __init__(self, pool: ExecutorPool) -> None:
        self.pool = pool
        self.idle: list[tuple[Waiter[Task | None], float]] = []  # (waiter, parked at loop time), oldest first
        self.greenlets: set[gevent.Greenlet] = set()
        self.loop = gevent.get_hub().loop
        self._reaper: Any = None

    def spawn(self, first: Task | None = None) -> None:
        self.pool.alive += 1
        glet = gevent.spawn(self._executor, first)
        self.greenlets.add(glet)
        glet.link(self.greenlets.discard)
        if self.pool.alive > self.pool.min and self.pool.idle_shrink and self._reaper is None:
            period = self.pool.idle_shrink / 2
            self._reaper = self.loop.timer(period, period)
            self._reaper.start(self._reap)

    def has_idle(self) -> bool:
        return bool(self.idle)

    def run(self, task: Task) -> None:
        if not self.idle:
            self.spawn(task)
            return
        waiter = self.idle.pop()[0]
        hub = gevent.get_hub()
        if gevent.getcurrent() is hub:
            waiter.switch(task)  # runs the task now; we are back when it blocks or ends
        else:
            hub.loop.run_callback(waiter.switch, task)

    def _reap(self) -> None:
        pool = self.pool
        deadline = self.loop.now() - pool.idle_shrink
        retire = 0
        while retire < len(self.idle) and pool.alive - retire > pool.min and self.idle[retire][1] <= deadline:
            retire += 1
        if retire:
            retired, self.idle[:retire] = self.idle[:retire], []
            pool.alive -= retire
            for waiter, _ in retired:
                self.loop.run_callback(waiter.switch, None)
        if pool.alive <= pool.min and self._reaper is not None:
            self._reaper.stop()
            self._reaper = None

    def _executor(self, task: Task | None) -> None:
        pool = self.pool
        loop = self.loop
        retired = False
        try:
            while True:
                if task is None:
                    waiter: Waiter[Task | None] = Waiter()
                    self.idle.append((waiter, loop.now()))
                    if pool.pending:
                        pool.scheduler.notify()  # work queued while we were busy or starting
                    task = waiter.get()
                    if task is None:
                        retired = True  # stop() or the reaper (which counted us out already)
                        return
                fn, args, _, _ = task
                error: BaseException | None = None
                try:
                    fn(*args)
                except Exception as exc:
                    error = exc
                pool.task_finished(task, error)
                task = None
        finally:
            if not retired:
                pool.alive -= 1

    def stop(self) -> None:
        hub = gevent.get_hub()
        for waiter, _ in self.idle:
            self.pool.alive -= 1
            hub.loop.run_callback(waiter.switch, None)
        self.idle.clear()
        if self._reaper is not None:
            self._reaper.stop()
            self._reaper = None


class _ThreadExecutors:
    """Executors as native threads fed by a native queue; completions return via the hub loop."""

    def __init__(self, pool: ExecutorPool) -> None:
        import _queue  # the C SimpleQueue: never monkey-patched, blocks natively

        self.pool = pool
        self.queue: _queue.SimpleQueue[Task | None] = _queue.SimpleQueue()
        self.idle = 0
        self.hub = gevent.get_hub()
        self.thread_ids: list[int] = []

    def spawn(self, first: Task | None = None) -> None:
        self.pool.alive += 1
        if first is not None:
            self.queue.put(first)
        else:
            self.idle += 1
        _start_thread(self._executor, (first is not None,))

    def has_idle(self) -> bool:
        return self.idle > 0

    def run(self, task: Task) -> None:
        if self.idle:
            self.idle -= 1
            self.queue.put(task)
        else:
            self.spawn(task)

    def _executor(self, started_busy: bool) -> None:
        import _queue

        self.thread_ids.append(_native_get_ident())
        _apply_nice(self.pool)
        pool = self.pool
        loop = self.hub.loop
        while True:
            try:
                task = (
                    self.queue.get(timeout=pool.idle_shrink or None) if not started_busy else self.queue.get()
                )
            except _queue.Empty:
                # Shrink: only the hub may change the counters, so ask it.
                loop.run_callback_threadsafe(self._maybe_retire)
                continue
            started_busy = False
            if task is None:
                return
            fn, args, _, _ = task
            error: BaseException | None = None
            try:
                fn(*args)
            except BaseException as exc:
                error = exc
            loop.run_callback_threadsafe(self._finished, task, error)

    def _finished(self, task: Task, error: BaseException | None) -> None:
        self.idle += 1
        self.pool.task_finished(task, error)

    def _maybe_retire(self) -> None:
        if self.pool.alive > self.pool.min and self.idle > 0:
            self.idle -= 1
            self.pool.alive -= 1
            self.queue.put(None)

    def stop(self) -> None:
        for _ in range(self.pool.alive):
            self.queue.put(None)


def _apply_nice(pool: ExecutorPool) -> None:
    global _nice_warning_logged
    nice = nice_for_priority(pool.priority)
    if nice == 0:
        return
    try:
        # On Linux, PRIO_PROCESS with a thread id sets that one thread's nice value.
        os.setpriority(os.PRIO_PROCESS, get_original("threading", "get_native_id")(), nice)
    except (OSError, AttributeError) as exc:
        if not _nice_warning_logged:
            _nice_warning_logged = True
            log(
                logger,
                "warning",
                "cannot set executor thread priority",
                pool=pool.name,
                nice=nice,
                error=str(exc),
            )
