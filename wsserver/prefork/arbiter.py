"""The master process: binds the ports, forks the workers, keeps them alive, reloads, stops.

Modelled on gunicorn's arbiter. Read :meth:`Arbiter.run` top to bottom: signal handlers only
queue the signal and wake the loop; each turn of the loop

1. sleeps until a signal, a relay frame or a timer (and moves broadcast frames meanwhile,
   and drives the services: the metrics listener, status.py, and those the command line adds,
   the admin process's supervisor; see service.py),
2. reaps exited workers (logging why),
3. kills workers that are stuck (silent heartbeat) or overdue (drain/stop took too long),
4. reaches the worker count of the current generation (forking, with back-off after boot
   failures; draining extras after TTOU),
5. finishes a reload when the new generation is ready (then drains the old one),
6. handles the queued signals.

The master never imports gevent nor the endpoint modules: endpoints are checked in a
short-lived child (:func:`check_endpoints`), so each new generation forks from a clean master
and imports the endpoint code as it is on disk now. Hitless reload follows from two things:
listening sockets that stay the same are never closed (new and old workers accept on the
same socket while both run), and the old generation is told to stop accepting only once
every worker of the new one said READY.

The file is long because the loop's steps share one state (generations, workers, the pending
reload) and read best together; what does not need that state lives beside it: sockets.py,
pidfile.py, child.py, and the services (service.py) with their view of the master.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsserver.config import MAX_WORKERS, Config, ConfigError, PortConfig
from wsserver.config.flags import apply_overrides
from wsserver.logs import configure as configure_logging
from wsserver.logs import log
from wsserver.preflight import load as preflight_load
from wsserver.preflight import preflight
from wsserver.prefork import child, relay, sockets
from wsserver.prefork.child import EXIT_BOOT, STACK_DUMP_SIGNAL, flush_stdio, open_log, set_title
from wsserver.prefork.pidfile import PidFileTaken, remove_pid_file, write_pid_file
from wsserver.prefork.service import LogSettings, MasterService, WorkerView
from wsserver.prefork.sockets import ListenKey
from wsserver.prefork.status import StatusServer
from wsserver.prefork.worker import CLOSE_GRACE, Heartbeat, LoadBoard, WorkerSpec
from wsserver.runtime.limits import ConnectionTable
from wsserver.runtime.listeners import BoundListener
from wsserver.security.ratelimit_shared import SharedAuthLimits
from wsserver.version import __version__

logger = logging.getLogger("wsserver.arbiter")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
# EXIT_BOOT (3): no worker could ever start; the master gives up (gunicorn's WORKER_BOOT_ERROR).

MAX_BOOT_FAILURES = 5  # boot failures, before any worker ever started, that halt the master
BACKOFF_BASE = 0.1  # seconds; doubles with each consecutive boot failure
BACKOFF_MAX = 10.0
NO_CELL_RETRY = 1.0  # seconds: every load-board cell taken (old generations still draining)
RELOAD_MAX_BOOT_FAILURES = 3  # boot failures of a new generation that abort its reload
FAST_STOP_TIMEOUT = 1.0  # QUIT: how long workers get before SIGKILL
STOP_GRACE = 0.5  # TERM: extra time past graceful_timeout before SIGKILL
CHECK_TIMEOUT = 60.0  # the endpoint check child
SIGNAL_QUEUE_MAX = 10
HEARTBEAT_CHECK = 0.5  # the loop looks at the heartbeats at least this often (seconds)
STACK_DUMP_WAIT = 0.5  # a stuck worker's time to write its stacks to the log before SIGKILL

HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


class Halt(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Options:
    """What the command line says: the config file, the log file, and the settings it overrides
    (``{"server.workers": 4}``, applied to every load of the file by apply_overrides)."""

    config_path: str | None = None
    log_file: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Worker:
    """The master's record of one worker process."""

    pid: int
    gen: int
    slot: int
    channel: relay.Channel
    heartbeat: Heartbeat
    cell: int  # on the LoadBoard
    ready: bool = False
    state: str = "active"  # active | draining | stopping
    kill_at: float | None = None  # SIGKILL if still alive then
    killed: bool = False
    timed_out: bool = False  # missed its heartbeat: asked for a stack dump, SIGKILL at kill_at
    broker_up: bool = False  # [cluster]: the worker's last report of its broker connection


@dataclass
class Generation:
    """What a generation of workers runs: the config and the listening sockets."""

    gen: int
    config: Config
    sockets: dict[ListenKey, BoundListener]
    target: int  # how many workers


@dataclass
class PendingReload:
    previous: Generation
    opened: list[BoundListener]  # bound for the new generation
    deadline: float
    failures: int = 0
    again: bool = False  # another HUP arrived meanwhile


@dataclass
class SignalQueue:
    signals: list[int] = field(default_factory=list)
    wake_r: int = -1
    wake_w: int = -1


def worker_count(config: Config) -> int:
    n = config.server.workers
    return min(n if n > 0 else (os.cpu_count() or 1), MAX_WORKERS)


def _exit_text(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _reset_child_signals() -> None:
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_endpoints(config: Config) -> str | None:
    """Import and instantiate every endpoint in a short-lived child; the error text, or None.

    The master itself never imports endpoint modules, so each generation of workers forks
    from a master without them and imports the code as it is on disk now.
    """
    read_fd, write_fd = os.pipe()
    flush_stdio()
    pid = os.fork()
    if pid == 0:  # the checking child
        code = 0
        try:
            os.close(read_fd)
            _reset_child_signals()
            from wsserver.runtime.dispatcher import load_mounts

            load_mounts(config)
        except BaseException as exc:
            code = EXIT_CONFIG
            try:
                os.write(write_fd, (str(exc) or repr(exc)).encode()[:60000])
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + CHECK_TIMEOUT
    timed_out = False
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        poller = select.poll()
        poller.register(pipe.fileno(), select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            if not poller.poll(remaining * 1000):
                continue
            data = pipe.read(65536)
            if not data:
                break
            chunks.append(data)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return f"importing the endpoints took longer than {CHECK_TIMEOUT:.0f}s"
    if os.waitstatus_to_exitcode(status) != 0:
        text = b"".join(chunks).decode(errors="replace")
        return text or f"the endpoint check failed ({_exit_text(status)})"
    return None


class Arbiter:
    def __init__(self, config: Config, options: Options, services: Sequence[MasterService] = ()) -> None:
        self.options = options
        self.reuse_port = config.server.reuse_port
        self.current = Generation(0, config, {}, worker_count(config))
        self.pending: PendingReload | None = None
        self.workers: dict[int, Worker] = {}
        self.next_gen = 1
        self.signals = SignalQueue()
        self.stopping = False
        self.announced = False  # "wsserver started" logged
        self.ever_ready = False
        self.boot_failures = 0  # consecutive
        self.spawn_after = 0.0  # back-off: no fork before this (monotonic)
        self.pid = os.getpid()
        self.log_stream: Any = None
        self.board = LoadBoard()
        self.connections = ConnectionTable(rows=LoadBoard.CELLS)  # max_connections across workers
        self.auth_limits = SharedAuthLimits()  # auth_rate_limit across workers (and reloads)
        self.pid_file_written: str | None = None
        # [metrics] (/metrics, /healthz, /readyz) is the master's own; the rest come from the caller.
        self.services: list[MasterService] = [StatusServer(), *services]
        self.handle = MasterHandle(self)

    @property
    def config(self) -> Config:
        return self.current.config

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until TERM/INT/QUIT; returns the process exit code."""
        self.setup_logging()
        error = check_endpoints(self.config)
        if error is not None:
            log(logger, "error", "invalid configuration", error=error)
            return EXIT_CONFIG
        # Keystores opened once per generation, here: the workers inherit the TLS contexts.
        tls_errors = preflight(self.config)
        for line in tls_errors:
            log(logger, "error", "invalid configuration", error=line)
        if tls_errors:
            return EXIT_CONFIG
        try:
            self.current.sockets = self.bind_all(self.config, {})[0]
        except OSError as exc:
            log(logger, "error", "cannot listen", error=str(exc))
            return EXIT_RUNTIME
        try:
            self.write_pid_file()
        except Halt as exc:
            log(logger, "error", exc.reason)
            sockets.close_sockets(self.current.sockets.values())
            return exc.code
        self.install_signals()
        set_title("wsserver: master" + (f" [{self.options.config_path}]" if self.options.config_path else ""))
        self.current.gen = self.take_gen()
        log(
            logger,
            "info",
            "master starting",
            version=__version__,
            pid=self.pid,
            workers=self.current.target,
            mode="reuse_port" if self.reuse_port else "shared",
            config=self.config.source,
        )
        code = EXIT_OK
        try:
            for service in self.services:
                service.start(self.handle, self.handle)
            while True:
                self.sleep(self.next_timeout())
                self.reap_workers()
                self.kill_stuck_workers()
                self.reach_worker_count()
                self.finish_reload()
                stop = self.handle_signals()
                if stop is not None:
                    self.shutdown(graceful=stop == "graceful")
                    break
        except Halt as exc:
            log(logger, "error", exc.reason)
            self.shutdown(graceful=False)
            code = exc.code
        except BaseException:
            log(logger, "critical", "master crashed", exc_info=True)
            self.shutdown(graceful=False)
            code = EXIT_RUNTIME
        finally:
            sockets.close_sockets(self.current.sockets.values())
            for service in reversed(self.services):
                service.stop()
            self.remove_pid_file()
        log(logger, "info", "wsserver stopped", code=code)
        return code

    # ---- 1. sleeping and relaying ----------------------------------------------------------
    def next_timeout(self) -> float:
        now = time.monotonic()
        deadlines = [now + 1.0, now + HEARTBEAT_CHECK]
        if self.spawn_after > now:
            deadlines.append(self.spawn_after)
        elif self.missing_slots() or self.extra_workers():
            return 0.0
        deadlines += [w.kill_at for w in self.workers.values() if w.kill_at is not None]
        if self.pending is not None:
            deadlines.append(self.pending.deadline)
        for service in self.services:
            service_deadline = service.next_deadline()
            if service_deadline is not None:
                deadlines.append(service_deadline)
        return max(0.0, min(deadlines) - now)

    def sleep(self, timeout: float) -> None:
        """Wait for a signal (the wake pipe) or relay traffic, moving relay frames meanwhile."""
        poller = select.poll()
        poller.register(self.signals.wake_r, select.POLLIN)
        congested = any(w.channel.congested for w in self.workers.values())
        by_fd: dict[int, Worker] = {}
        for worker in self.workers.values():
            channel = worker.channel
            if channel.closed:
                continue
            events = 0 if congested else select.POLLIN
            if channel.outbuf:
                events |= select.POLLOUT
            if events:
                by_fd[channel.fileno()] = worker
                poller.register(channel.fileno(), events)
        service_fds: dict[int, MasterService] = {}
        for service in self.services:
            for fd, events in service.registrations():
                service_fds[fd] = service
                poller.register(fd, events)
        for fd, events in poller.poll(timeout * 1000):
            if fd == self.signals.wake_r:
                self._drain_wake_pipe()
                continue
            if fd in service_fds:
                service_fds[fd].on_event(fd, events)
                continue
            worker = by_fd[fd]
            if events & select.POLLOUT:
                worker.channel.flush()
            if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                self.receive_from(worker)
        now = time.monotonic()
        for service in self.services:
            service.tick(now)

    def receive_from(self, worker: Worker) -> None:
        try:
            frames = worker.channel.receive()
        except relay.RelayError as exc:
            log(logger, "error", "bad relay frame from a worker", pid=worker.pid, error=str(exc))
            worker.channel.close()
            return
        for kind, body, raw in frames:
            if kind == relay.PUBLISH:
                for other in self.workers.values():
                    if other is not worker:
                        other.channel.send(raw)
            elif kind == relay.READY:
                worker.ready = True
                self.ever_ready = True
                self.boot_failures = 0
                log(logger, "debug", "worker ready", pid=worker.pid, gen=worker.gen, slot=worker.slot)
                self.announce()
            elif kind == relay.BROKER:
                up = body == b"\x01"
                if up != worker.broker_up:
                    worker.broker_up = up
                    log(logger, "debug", "worker broker state", pid=worker.pid, up=up)
            else:  # REPLY: a worker's answer to the admin process
                for service in self.services:
                    service.on_worker_message(worker, kind, body, raw)

    def announce(self) -> None:
        if self.announced:
            return
        ready = [w for w in self.workers.values() if w.gen == self.current.gen and w.ready]
        if len(ready) >= self.current.target:
            self.announced = True
            log(
                logger,
                "info",
                "wsserver started",
                version=__version__,
                config=self.config.source,
                pid=self.pid,
                workers=len(ready),
            )

    # ---- 2. reaping ------------------------------------------------------------------------
    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            how = _exit_text(status)
            if worker is None:
                for service in self.services:  # the admin process, say
                    if service.on_child_exit(pid, how):
                        break
                continue
            unexpected = worker.state == "active" and not self.stopping
            self.forget(worker, how, unexpected)
            if unexpected:
                log(logger, "warning", "worker died", pid=pid, gen=worker.gen, slot=worker.slot, how=how)
            else:
                log(logger, "info", "worker exited", pid=pid, gen=worker.gen, slot=worker.slot, how=how)
            if not worker.ready and not worker.killed and not self.stopping:
                self.boot_failed(worker, status)

    def forget(self, worker: Worker, how: str, unexpected: bool = False) -> None:
        """A reaped worker's resources: its relay channel, heartbeat file and load cell."""
        worker.channel.close()
        worker.heartbeat.close()
        self.board.free(worker.cell, {w.cell for w in self.workers.values()})
        self.connections.clear_row(worker.cell)  # its connections died with it
        for service in self.services:
            service.on_worker_exit(worker, how, unexpected)

    def boot_failed(self, worker: Worker, status: int) -> None:
        self.boot_failures += 1
        if self.pending is not None and worker.gen == self.current.gen:
            self.pending.failures += 1
        if not self.ever_ready and self.boot_failures >= MAX_BOOT_FAILURES:
            raise Halt(
                EXIT_BOOT,
                f"no worker could start ({self.boot_failures} attempts, last: "
                f"{_exit_text(status)}); see the errors above",
            )
        delay = min(BACKOFF_BASE * 2 ** (self.boot_failures - 1), BACKOFF_MAX)
        self.spawn_after = time.monotonic() + delay
        log(
            logger,
            "warning",
            "worker failed to start; backing off",
            pid=worker.pid,
            failures=self.boot_failures,
            delay_s=round(delay, 2),
        )

    # ---- 3. killing stuck workers ----------------------------------------------------------
    def kill_stuck_workers(self) -> None:
        now = time.monotonic()
        timeout = self.config.server.worker_timeout
        for worker in list(self.workers.values()):
            if worker.killed:
                continue
            if worker.kill_at is not None and now >= worker.kill_at:
                if not worker.timed_out:
                    log(
                        logger,
                        "warning",
                        "worker did not exit in time; killing",
                        pid=worker.pid,
                        gen=worker.gen,
                        state=worker.state,
                    )
                self.kill(worker, signal.SIGKILL)
                continue
            if worker.timed_out:
                continue
            silent = worker.heartbeat.silent_for(now)
            if silent > timeout:
                # Its stacks first (written by the worker's own signal handler, even with the hub
                # blocked): what it was stuck in is the one thing an operator needs to know.
                log(
                    logger,
                    "error",
                    "worker timed out; killing",
                    pid=worker.pid,
                    gen=worker.gen,
                    silent_s=round(silent, 1),
                    worker_timeout=timeout,
                    stack_dump=STACK_DUMP_SIGNAL.name,
                )
                worker.timed_out = True
                self.kill(worker, STACK_DUMP_SIGNAL)
                dump_deadline = now + STACK_DUMP_WAIT
                worker.kill_at = (
                    dump_deadline if worker.kill_at is None else min(worker.kill_at, dump_deadline)
                )

    def kill(self, worker: Worker, sig: int) -> None:
        if sig == signal.SIGKILL:
            worker.killed = True
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    # ---- 4. reaching the worker count ------------------------------------------------------
    def reach_worker_count(self) -> None:
        if self.stopping:
            return
        for worker in self.extra_workers():  # after TTOU
            self.drain(worker)
        missing = self.missing_slots()
        if missing and time.monotonic() >= self.spawn_after:
            for slot in missing:
                self.spawn(slot)
                if self.spawn_after > time.monotonic():  # no room for it: the others wait as well
                    break
        self.close_unused_slot_sockets()

    def extra_workers(self) -> list[Worker]:
        gen = self.current
        return [
            w
            for w in self.workers.values()
            if w.gen == gen.gen and w.state == "active" and w.slot >= gen.target
        ]

    def missing_slots(self) -> list[int]:
        gen = self.current
        used = {w.slot for w in self.workers.values() if w.gen == gen.gen and w.state == "active"}
        return [] if self.stopping else [slot for slot in range(gen.target) if slot not in used]

    def spawn(self, slot: int) -> None:
        gen = self.current
        try:
            listeners = sockets.listeners_for(gen.config, gen.sockets, slot, self.reuse_port)
        except OSError as exc:
            log(logger, "error", "cannot listen for a new worker", slot=slot, error=str(exc))
            gen.target = max(1, min(gen.target, slot))
            return
        cell = self.board.take({w.cell for w in self.workers.values()})
        if cell is None:
            log(
                logger,
                "warning",
                "no room for another worker until draining workers exit; retrying",
                slot=slot,
                workers=len(self.workers),
                limit=LoadBoard.CELLS - 1,
            )
            self.spawn_after = time.monotonic() + NO_CELL_RETRY
            return
        master_end, worker_end = relay.socketpair()
        heartbeat = Heartbeat()
        self.connections.clear_row(cell)
        self.connections.assign([port.alias for port in gen.config.ports])
        # Tables for this generation and for the one a failed reload would fall back to.
        self.auth_limits.prepare([gen.config] + ([self.pending.previous.config] if self.pending else []))
        spec = WorkerSpec(
            gen=gen.gen,
            slot=slot,
            config=gen.config,
            listeners=listeners,
            link=worker_end,
            heartbeat=heartbeat,
            master_pid=self.pid,
            log_file=self.options.log_file,
            log_level=self.log_level(gen.config),
            log_format=self.log_format(gen.config),
            board=self.board,
            cell=cell,
            balance=not self.reuse_port,
            connections=self.connections,
            auth_limits=self.auth_limits,
        )

        def in_worker() -> None:
            master_end.close()
            self.close_in_child(listeners)
            from wsserver.prefork import worker

            worker.run(spec)

        pid = child.fork(in_worker)
        worker_end.close()
        self.workers[pid] = Worker(pid, gen.gen, slot, relay.Channel(master_end), heartbeat, cell)
        log(logger, "info", "worker started", pid=pid, gen=gen.gen, slot=slot)

    def close_in_child(self, keep: list[BoundListener]) -> None:
        """In a new worker: close every inherited fd of the master that is not its own."""
        os.close(self.signals.wake_r)
        os.close(self.signals.wake_w)
        for service in self.services:
            service.close_in_child()
        generations = [self.current] + ([self.pending.previous] if self.pending else [])
        sockets.close_all_except([gen.sockets for gen in generations], keep)
        for other in self.workers.values():
            other.channel.sock.close()
            other.heartbeat.close()

    def drain(self, worker: Worker, timeout: float | None = None, closing: list[str] | None = None) -> None:
        """Tell a worker to stop accepting and let its sessions finish (reload, TTOU); sessions
        on the ports in ``closing`` (gone from the new configuration) get 1001 at once."""
        if worker.state != "active":
            return
        timeout = self.config.server.graceful_timeout if timeout is None else timeout
        worker.state = "draining"
        deadline = time.monotonic() + timeout + CLOSE_GRACE + 1.0
        worker.kill_at = (
            deadline if worker.kill_at is None else min(worker.kill_at, deadline)
        )  # timed out: sooner
        worker.channel.send(relay.encode_drain(timeout, closing or []))
        log(logger, "info", "worker draining", pid=worker.pid, gen=worker.gen, slot=worker.slot)

    # ---- listening sockets -----------------------------------------------------------------
    def bind_all(
        self, config: Config, have: dict[ListenKey, BoundListener]
    ) -> tuple[dict[ListenKey, BoundListener], list[BoundListener]]:
        return sockets.bind_all(config, worker_count(config), self.reuse_port, have)

    def close_unused_slot_sockets(self) -> None:
        """reuse_port: close the sockets of slots no worker uses any more (after TTOU)."""
        if not self.reuse_port or self.pending is not None:
            return
        gen = self.current
        unused = sockets.unused_slots(gen.sockets, gen.target, {w.slot for w in self.workers.values()})
        sockets.close_sockets([gen.sockets.pop(key) for key in unused])

    # ---- 5. reload -------------------------------------------------------------------------
    def reload(self) -> None:
        """HUP: re-read the config; if valid, start a new generation (see finish_reload)."""
        if self.pending is not None:
            self.pending.again = True
            log(logger, "info", "reload requested during a reload: will reload again when it completes")
            return
        log(logger, "info", "reloading", config=self.options.config_path or "<built-in>")
        try:
            config = apply_overrides(preflight_load(self.options.config_path), self.options.overrides)
        except ConfigError as exc:
            for line in exc.errors:
                log(logger, "error", "reload: invalid configuration", error=line)
            log(logger, "error", "reload aborted: the running configuration is unchanged")
            self.reload_result("invalid", exc.errors)
            return
        except OSError as exc:
            log(logger, "error", "reload aborted: cannot read the configuration", error=str(exc))
            self.reload_result("invalid", [f"cannot read the configuration: {exc}"])
            return
        error = check_endpoints(config)
        errors = ([error] if error is not None else []) + preflight(config)
        if errors:
            for line in errors:
                log(logger, "error", "reload: invalid configuration", error=line)
            log(logger, "error", "reload aborted: the running configuration is unchanged")
            self.reload_result("invalid", errors)
            return
        if config.server.reuse_port != self.reuse_port:
            log(
                logger,
                "warning",
                "reload: a change of server.reuse_port needs a restart; keeping it",
                reuse_port=self.reuse_port,
            )
        previous = self.current
        try:
            sockets, opened = self.bind_all(config, previous.sockets)
        except OSError as exc:
            log(logger, "error", "reload aborted: cannot listen", error=str(exc))
            self.reload_result("failed", [f"cannot listen: {exc}"])
            return
        self.pending = PendingReload(
            previous=previous, opened=opened, deadline=time.monotonic() + config.server.worker_timeout
        )
        self.current = Generation(self.take_gen(), config, sockets, worker_count(config))
        self.setup_logging()
        for service in self.services:
            service.on_config(config)
        old_ports = {p.alias for p in previous.config.active_ports()}
        new_ports = {p.alias for p in config.active_ports()}
        log(
            logger,
            "info",
            "reload: starting a new generation",
            gen=self.current.gen,
            workers=self.current.target,
            added=",".join(sorted(new_ports - old_ports)) or "-",
            removed=",".join(sorted(old_ports - new_ports)) or "-",
        )
        # reach_worker_count forks the new generation; finish_reload completes the switch.

    def finish_reload(self) -> None:
        pending = self.pending
        if pending is None or self.stopping:
            return
        gen = self.current
        new = [w for w in self.workers.values() if w.gen == gen.gen and w.state == "active"]
        if len(new) >= gen.target and all(w.ready for w in new):
            self.pending = None
            served = {(p.bind, p.port) for p in gen.config.active_ports()}
            closing = [
                p.alias for p in pending.previous.config.active_ports() if (p.bind, p.port) not in served
            ]
            for worker in list(self.workers.values()):
                if worker.gen != gen.gen:
                    self.drain(worker, closing=closing)
            sockets.apply_backlogs(gen.config, gen.sockets)
            kept = {id(listener.sock) for listener in gen.sockets.values()}
            sockets.close_sockets(bl for bl in pending.previous.sockets.values() if id(bl.sock) not in kept)
            log(logger, "info", "reload complete", gen=gen.gen, workers=len(new))
            self.reload_result("success")
            if pending.again:
                self.reload()
        elif pending.failures >= RELOAD_MAX_BOOT_FAILURES or time.monotonic() >= pending.deadline:
            self.pending = None
            for worker in new:
                if worker.ready:
                    self.drain(worker)
                else:
                    self.kill(worker, signal.SIGKILL)
            kept = {id(listener.sock) for listener in pending.previous.sockets.values()}
            sockets.close_sockets(bl for bl in pending.opened if id(bl.sock) not in kept)
            self.current = pending.previous
            self.setup_logging()
            for service in self.services:
                service.on_config(self.config)
            self.reload_result(
                "failed", ["the new workers did not start; the previous generation keeps running"]
            )
            self.spawn_after = 0.0
            log(
                logger,
                "error",
                "reload failed: the new workers did not start; the previous generation keeps running",
                failed_gen=gen.gen,
                gen=self.current.gen,
            )

    def reload_result(self, result: str, errors: list[str] | None = None) -> None:
        """A reload ended ("success", "invalid" or "failed"): counted for /metrics, answered to the
        admin process if it asked for the reload."""
        for service in self.services:
            service.reload_result(result, errors or [])

    def take_gen(self) -> int:
        gen, self.next_gen = self.next_gen, self.next_gen + 1
        return gen

    # ---- 6. signals ------------------------------------------------------------------------
    def install_signals(self) -> None:
        self.signals.wake_r, self.signals.wake_w = os.pipe()
        os.set_blocking(self.signals.wake_r, False)
        os.set_blocking(self.signals.wake_w, False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGCHLD, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only queue and wake the loop: everything else happens in the loop.
        if signum != signal.SIGCHLD and len(self.signals.signals) < SIGNAL_QUEUE_MAX:
            self.signals.signals.append(signum)
        try:
            os.write(self.signals.wake_w, b"!")
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EBADF):
                raise

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self.signals.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def handle_signals(self) -> str | None:
        """Run the queued signals' actions; "graceful" or "fast" when the master must stop."""
        while self.signals.signals:
            sig = self.signals.signals.pop(0)
            name = signal.Signals(sig).name
            log(logger, "info", "signal received", signal=name)
            if sig in (signal.SIGTERM, signal.SIGINT):
                return "graceful"
            if sig == signal.SIGQUIT:
                return "fast"
            if sig == signal.SIGHUP:
                self.reload()
            elif sig == signal.SIGTTIN:
                if self.current.target >= MAX_WORKERS:
                    log(
                        logger,
                        "warning",
                        "one worker more refused: at the limit",
                        workers=self.current.target,
                        limit=MAX_WORKERS,
                    )
                else:
                    self.current.target += 1
                    log(logger, "info", "one worker more", workers=self.current.target)
            elif sig == signal.SIGTTOU:
                if self.current.target > 1:
                    self.current.target -= 1
                log(logger, "info", "one worker less", workers=self.current.target)
            elif sig == signal.SIGUSR1:
                self.reopen_logs()
        return None

    # ---- stopping --------------------------------------------------------------------------
    def shutdown(self, graceful: bool) -> None:
        """TERM/INT: workers close every session with 1001 and get graceful_timeout; QUIT: 1 s."""
        self.stopping = True
        log(
            logger,
            "info",
            "stopping",
            graceful=graceful,
            workers=len(self.workers),
            graceful_timeout=self.config.server.graceful_timeout,
        )
        # Our copies of the listening sockets go now; the workers close theirs as they stop.
        sockets.close_sockets(self.current.sockets.values())
        if self.pending is not None:
            sockets.close_sockets(self.pending.previous.sockets.values())
            self.pending = None
        timeout = self.config.server.graceful_timeout + STOP_GRACE if graceful else FAST_STOP_TIMEOUT
        self.signal_workers(signal.SIGTERM if graceful else signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while self.workers and time.monotonic() < deadline:
            if self.signals.wake_r >= 0:
                self.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            else:
                time.sleep(0.05)
            self.reap_workers()
            if graceful and signal.SIGQUIT in self.signals.signals:
                graceful = False
                self.signal_workers(signal.SIGQUIT)
                deadline = min(deadline, time.monotonic() + FAST_STOP_TIMEOUT)
            self.signals.signals.clear()
        for worker in list(self.workers.values()):
            log(logger, "warning", "worker did not stop in time; killing", pid=worker.pid, gen=worker.gen)
            self.kill(worker, signal.SIGKILL)
        for pid in list(self.workers):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.forget(self.workers.pop(pid), "signal SIGKILL")

    def signal_workers(self, sig: int) -> None:
        for worker in self.workers.values():
            if sig in (signal.SIGTERM, signal.SIGQUIT):
                worker.state = "stopping"
            self.kill(worker, sig)

    # ---- logs and the pid file -------------------------------------------------------------
    def log_level(self, config: Config) -> str:
        return config.server.log_level

    def log_format(self, config: Config) -> str:
        return config.server.log_format

    def setup_logging(self) -> None:
        if self.options.log_file and self.log_stream is None:
            self.log_stream = open_log(self.options.log_file)
        configure_logging(self.log_level(self.config), self.log_format(self.config), self.log_stream)

    def reopen_logs(self) -> None:
        if self.options.log_file:
            old, self.log_stream = self.log_stream, open_log(self.options.log_file)
            self.setup_logging()
            if old is not None:
                old.close()
            log(logger, "info", "log file reopened", path=self.options.log_file)
        else:
            log(logger, "info", "logging to stderr: no log file to reopen")
        self.signal_workers(signal.SIGUSR1)

    @property
    def pid_file(self) -> str:
        return self.config.server.pid_file

    def write_pid_file(self) -> None:
        path = self.pid_file
        if not path:
            return
        try:
            write_pid_file(path, self.pid)
        except PidFileTaken as exc:
            raise Halt(EXIT_RUNTIME, str(exc)) from None
        self.pid_file_written = path

    def remove_pid_file(self) -> None:
        if self.pid_file_written:
            remove_pid_file(self.pid_file_written, self.pid)


class MasterHandle:
    """The arbiter as its services see it (:class:`~wsserver.prefork.service.MasterView`) and
    command it (:class:`~wsserver.prefork.service.MasterControl`)."""

    def __init__(self, arbiter: Arbiter) -> None:
        self._arbiter = arbiter

    @property
    def pid(self) -> int:
        return self._arbiter.pid

    @property
    def config_path(self) -> str | None:
        return self._arbiter.options.config_path

    @property
    def stopping(self) -> bool:
        return self._arbiter.stopping

    @property
    def reloading(self) -> bool:
        return self._arbiter.pending is not None

    @property
    def generation(self) -> int:
        return self._arbiter.current.gen

    @property
    def config(self) -> Config:
        return self._arbiter.current.config

    @property
    def target(self) -> int:
        return self._arbiter.current.target

    @property
    def workers(self) -> Collection[WorkerView]:
        return self._arbiter.workers.values()

    def listening(self, port: PortConfig) -> list[tuple]:
        found = sockets.of_port(self._arbiter.current.sockets, port)
        if not found or any(bl.sock.fileno() < 0 for bl in found):
            return []  # a port whose socket (any slot's) is closed is not listening
        return [bl.address for bl in found]

    def port_connections(self, alias: str) -> int:
        table = self._arbiter.connections
        return table.total(alias) if alias in table.columns else 0

    def worker_connections(self, worker: WorkerView) -> dict[str, int]:
        known = self._arbiter.workers.get(worker.pid)
        return self._arbiter.connections.row(known.cell) if known is not None else {}

    def log_settings(self, config: Config) -> LogSettings:
        arbiter = self._arbiter
        return LogSettings(arbiter.options.log_file, arbiter.log_level(config), arbiter.log_format(config))

    def reload(self) -> None:
        self._arbiter.reload()

    def send_to_workers(self, data: bytes, pids: Collection[int] | None = None) -> list[int]:
        sent = []
        for worker in self._arbiter.workers.values():
            if not worker.channel.closed and (pids is None or worker.pid in pids):
                worker.channel.send(data)
                sent.append(worker.pid)
        return sent

    def close_in_child(self) -> None:
        self._arbiter.close_in_child([])


def serve(config: Config, options: Options, services: Sequence[MasterService] = ()) -> int:
    """``wsserver serve``: run the master until it stops; returns the exit code."""
    return Arbiter(config, options, services).run()
