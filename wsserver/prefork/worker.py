"""One worker process, from the moment the master forks it until it exits.

The master imports this module for :class:`Heartbeat` and :class:`WorkerSpec` only; gevent
is imported (and the process monkey-patched) inside :func:`run`, in the child, right after
the fork: the master never has a hub.

What a worker does:

- builds a :class:`~wsserver.runtime.worker.WorkerRuntime` on the listening sockets the master
  handed it (inherited through the fork), then tells the master READY;
- writes a counter to its heartbeat file every second (the master kills a silent worker);
- relays broadcasts: its publishes go to the master, the master's go to local group members
  (with ``[cluster]`` it publishes to and subscribes at Redis instead: runtime/broker.py);
- SIGTERM: graceful stop (stop accepting, 1001 to every session, wait ``graceful_timeout``);
  a DRAIN message (reload, one worker less): stop accepting, let sessions finish on their
  own until the timeout, then 1001; SIGQUIT: exit at once; SIGUSR1: reopen the log file;
- exits when the master goes away (its relay socket closes or the parent pid changes).
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from wsserver.config import MAX_WORKERS
from wsserver.logs import configure as configure_logging
from wsserver.logs import log
from wsserver.prefork import child, relay
from wsserver.protocol.close_codes import CloseCode

if TYPE_CHECKING:
    from wsserver.config import Config
    from wsserver.runtime.limits import ConnectionTable
    from wsserver.runtime.listeners import BoundListener
    from wsserver.security.ratelimit_shared import SharedAuthLimits

logger = logging.getLogger("wsserver.prefork.worker")

EXIT_BOOT = child.EXIT_BOOT  # the worker could not build its runtime: the master counts a boot failure
HEARTBEAT_INTERVAL = 1.0
LOAD_INTERVAL = 0.2  # how often a worker refreshes its cell on the LoadBoard
CLOSE_GRACE = 2.0  # after 1001, how long sessions get to finish the closing handshake


class Heartbeat:
    """An unlinked temp file holding a counter: the worker bumps it, the master watches it.

    The master compares the counter with what it read last time on its own monotonic clock,
    so a change of the wall clock can never make a live worker look stuck.
    """

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="wsserver-heartbeat-")  # noqa: SIM115 - closed by close()
        self._count = 0
        self._last: bytes | None = None
        self._seen = time.monotonic()

    def beat(self) -> None:
        self._count += 1
        os.pwrite(self.file.fileno(), self._count.to_bytes(8, "big"), 0)

    def silent_for(self, now: float) -> float:
        """Seconds since the counter last changed (as seen by the master's checks)."""
        data = os.pread(self.file.fileno(), 8, 0)
        if data != self._last:
            self._last = data
            self._seen = now
        return now - self._seen

    def close(self) -> None:
        self.file.close()


class LoadBoard:
    """Connections per worker, in memory the master shares with every worker it forks.

    One int32 cell per live worker: its sessions plus handshakes in progress, or -1 while it
    does not accept (booting, draining, gone). Cell 0 holds the highest cell in use. The
    master hands out the cells; a worker writes only its own. Workers on shared listening
    sockets balance with it (see :class:`BalancedListener`).
    """

    # Cell 0 plus room for the current generation at the cap and for generations still
    # draining beside it (reloads and TTOU leave old workers finishing their sessions).
    CELLS = 4 * MAX_WORKERS

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, 4 * self.CELLS)  # anonymous, shared: the same pages after fork
        self.cells = memoryview(self._mem).cast("i")
        for i in range(1, self.CELLS):
            self.cells[i] = -1
        self.cells[0] = 0

    # ---- the master ------------------------------------------------------------------------
    def take(self, in_use: set[int]) -> int | None:
        """A free cell for a new worker, or None when every cell is in use."""
        cell = next((i for i in range(1, self.CELLS) if i not in in_use), None)
        if cell is None:
            return None
        self.cells[cell] = -1
        self.cells[0] = max(self.cells[0], cell)
        return cell

    def free(self, cell: int, in_use: set[int]) -> None:
        self.cells[cell] = -1
        self.cells[0] = max(in_use, default=0)

    # ---- the workers -----------------------------------------------------------------------
    def set(self, cell: int, load: int) -> None:
        self.cells[cell] = load

    def lowest(self) -> int | None:
        """The load of the least loaded accepting worker."""
        loads = [v for v in self.cells[1 : self.cells[0] + 1] if v >= 0]
        return min(loads) if loads else None


@dataclass
class WorkerSpec:
    """Everything a new worker gets from the master."""

    gen: int
    slot: int
    config: Config
    listeners: list[BoundListener]
    link: socket.socket  # the worker's end of its relay socketpair
    heartbeat: Heartbeat
    master_pid: int
    log_file: str | None
    log_level: str
    log_format: str
    board: LoadBoard
    cell: int  # this worker's cell on the board
    balance: bool  # shared listening sockets: gate accepts on the board
    connections: ConnectionTable  # per-port connection counts of all workers (max_connections)
    auth_limits: SharedAuthLimits | None = None  # failed-auth buckets of all workers (auth_rate_limit)


def run(spec: WorkerSpec) -> NoReturn:
    """The child's whole life after the fork; never returns."""
    child.run(lambda: _main(spec), "worker crashed", gen=spec.gen)


def _main(spec: WorkerSpec) -> int:
    # The gevent world starts here, after the fork, before anything else touches a socket.
    log_stream = child.start(
        f"wsserver: worker [gen {spec.gen}]", spec.log_file, spec.log_level, spec.log_format
    )

    from wsserver.runtime.worker import WorkerRuntime

    try:
        runtime = WorkerRuntime(
            spec.config, spec.listeners, spec.connections, spec.cell, auth_limits=spec.auth_limits
        )
    except Exception as exc:
        log(logger, "error", "worker cannot start", exc_info=True, gen=spec.gen, error=str(exc))
        return EXIT_BOOT
    return _Worker(spec, runtime, log_stream).serve()


class BalancedListener:
    """Stands in for a port's shared listening socket in a worker and balances accepts.

    Every worker waiting on a shared socket is woken for each new connection, and the one
    that wins is the one that ran last: left alone, one busy worker takes nearly everything
    (the LIFO wake-up of epoll, the reason for nginx's accept_mutex). Here a worker that has
    more connections than the least loaded one plus a little slack waits ``DEFER`` seconds
    before accepting, so a less loaded worker takes the connection; if none does (they are
    busy), it accepts it after all: a connection is delayed by ``DEFER`` at most, never lost.
    """

    DEFER = 0.005

    def __init__(self, sock: Any, worker: _Worker) -> None:
        from gevent.socket import wait_read

        self._sock = sock
        self._worker = worker
        self._wait_read = wait_read
        sock.settimeout(0.0)  # accept() raises BlockingIOError instead of waiting

    def accept(self) -> tuple[Any, Any]:
        worker = self._worker
        while True:
            load = worker.load()
            lowest = worker.spec.board.lowest()
            if lowest is not None and load > lowest + 1 + lowest // 8:
                self._wait_read(self._sock.fileno())
                worker.gevent.sleep(self.DEFER)  # a less loaded worker may take it meanwhile
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                self._wait_read(self._sock.fileno())  # none pending (or another worker took it)
                continue
            worker.publish_load(load + 1)
            return conn, peer

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Worker:
    """The running worker (only ever constructed in the child, after monkey-patching)."""

    def __init__(self, spec: WorkerSpec, runtime: Any, log_stream: Any) -> None:
        import gevent
        from gevent import socket as gsocket
        from gevent.event import Event
        from gevent.lock import Semaphore

        self.gevent = gevent
        self.spec = spec
        self.runtime = runtime
        self.log_stream = log_stream
        link = spec.link
        self.link = gsocket.socket(link.family, link.type, fileno=link.detach())
        self.send_lock = Semaphore()
        self.phase = "serving"  # serving | draining | stopping
        self.urgent = Event()  # set by TERM during a drain: close the rest now

    # ---- life ------------------------------------------------------------------------------
    def serve(self) -> int:
        gevent = self.gevent
        gevent.signal_handler(signal.SIGTERM, self.stop, "TERM")
        gevent.signal_handler(signal.SIGQUIT, self.quit)
        gevent.signal_handler(signal.SIGUSR1, self.reopen_logs)
        broker = None
        if self.spec.config.cluster is not None:
            # [cluster]: this worker publishes to and subscribes at Redis itself; the master
            # relays nothing (see wsserver/runtime/broker.py).
            from wsserver.runtime.broker import Broker

            broker = Broker(self.spec.config.cluster, self.runtime.groups, on_state=self._broker_state)
            broker.start()
        else:
            self.runtime.groups.set_relay(self.publish)
        if self.spec.balance:
            for port in self.runtime.ports:
                port.sock = BalancedListener(port.sock, self)
        self.runtime.start()
        self.publish_load()
        gevent.spawn(self._heartbeat_loop)
        gevent.spawn(self._load_loop)
        gevent.spawn(self._relay_loop)
        self._send(relay.frame(relay.READY))
        log(logger, "info", "worker ready", gen=self.spec.gen, slot=self.spec.slot)
        self.runtime.stopped.wait()
        if broker is not None:
            broker.stop()
        self.runtime.groups.set_relay(None)
        log(logger, "info", "worker exiting", gen=self.spec.gen, reason=self.phase)
        return 0

    def stop(self, reason: str) -> None:
        """Graceful stop: no new connections, 1001 to every session, wait graceful_timeout."""
        if self.phase == "stopping":
            return
        if self.phase == "draining":
            self.urgent.set()
            return
        self.phase = "stopping"
        self.spec.board.set(self.spec.cell, -1)
        log(
            logger,
            "info",
            "worker stopping",
            gen=self.spec.gen,
            reason=reason,
            sessions=len(self.runtime.sessions()),
        )
        self._close_listeners()
        self.gevent.spawn(self.runtime.stop, self.spec.config.server.graceful_timeout)

    def drain(self, timeout: float, closing: tuple[str, ...] = ()) -> None:
        """Stop accepting; sessions go on until they end or ``timeout``, then 1001.

        Sessions on the ports in ``closing`` (ports the new generation no longer serves: removed,
        disabled, or whose package was disabled) get 1001 at once.
        """
        if self.phase != "serving":
            return
        self.phase = "draining"
        self.spec.board.set(self.spec.cell, -1)
        log(
            logger,
            "info",
            "worker draining",
            gen=self.spec.gen,
            sessions=len(self.runtime.sessions()),
            timeout=timeout,
            closing=",".join(closing) or "-",
        )
        self.gevent.spawn(self._drain, timeout, closing)

    def _drain(self, timeout: float, closing: tuple[str, ...] = ()) -> None:
        for port in self.runtime.ports:
            port.stop_accepting()
        self._close_listeners()
        deadline = time.monotonic() + timeout
        while self.load():
            for port in self.runtime.ports:  # again each turn: handshakes in progress end up here too
                if port.port.alias in closing:
                    for session in list(port.dispatcher.sessions.values()):
                        session.close(CloseCode.GOING_AWAY, "going away")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.urgent.wait(min(remaining, 0.2)):
                break
        remaining = len(self.runtime.sessions())
        if remaining:
            log(
                logger,
                "info",
                "drain timeout: closing sessions with 1001",
                gen=self.spec.gen,
                sessions=remaining,
            )
        self.runtime.stop(CLOSE_GRACE)

    def quit(self) -> None:
        """Fast stop: exit now; the kernel closes the connections."""
        log(logger, "info", "worker quitting", gen=self.spec.gen, sessions=len(self.runtime.sessions()))
        sys.stderr.flush()
        os._exit(0)

    def reopen_logs(self) -> None:
        if not self.spec.log_file:
            return
        old, self.log_stream = self.log_stream, child.open_log(self.spec.log_file)
        configure_logging(self.spec.log_level, self.spec.log_format, self.log_stream)
        child.dump_stacks_on_signal(self.log_stream)
        if old is not None:
            old.close()
        log(logger, "info", "log file reopened", path=self.spec.log_file)

    def _close_listeners(self) -> None:
        # The inherited listening fds: once every worker of a generation closed them and the
        # master dropped its copy, a removed port refuses connections.
        for listener in self.spec.listeners:
            try:
                listener.sock.close()
            except OSError:
                pass

    def load(self) -> int:
        """Sessions plus handshakes in progress."""
        return sum(len(port.dispatcher.sessions) + len(port.greenlets) for port in self.runtime.ports)

    def publish_load(self, load: int | None = None) -> None:
        if self.phase == "serving":
            self.spec.board.set(self.spec.cell, self.load() if load is None else load)

    # ---- master link -----------------------------------------------------------------------
    def publish(self, group: str, message: str | bytes) -> None:
        """The groups relay hook: hand a broadcast to the master for the other workers."""
        self._send(relay.encode_publish(group, message))

    def _broker_state(self, up: bool) -> None:
        """Tell the master whether this worker reaches the broker (its ``/readyz`` reads it)."""
        self.gevent.spawn(self._send, relay.encode_broker(up))  # the link may block: not in the broker's read

    def _send(self, data: bytes) -> None:
        with self.send_lock:
            try:
                self.link.sendall(data)
            except OSError:
                pass  # the master is gone; _relay_loop notices and stops this worker

    def _relay_loop(self) -> None:
        reader = relay.FrameReader()
        while True:
            try:
                data = self.link.recv(relay.RECV_SIZE)
            except OSError:
                data = b""
            if not data:
                self._master_gone("relay closed")
                return
            try:
                frames = list(reader.feed(data))
            except relay.RelayError as exc:
                log(logger, "error", "bad frame from the master", error=str(exc))
                self._master_gone("relay error")
                return
            for kind, body, _raw in frames:
                if kind == relay.PUBLISH:
                    self.runtime.groups.publish_local(*relay.decode_publish(body))
                elif kind == relay.DRAIN:
                    self.drain(relay.decode_drain(body), relay.decode_drain_closing(body))
                elif kind == relay.REQUEST:
                    self.gevent.spawn(self._answer, body)

    def _answer(self, body: bytes) -> None:
        """A request the master forwards from the admin process: list sessions, close one."""
        try:
            message = relay.decode_json(body)
        except relay.RelayError as exc:
            log(logger, "error", "bad request from the master", error=str(exc))
            return
        reply: dict[str, Any] = {"id": message.get("id"), "pid": os.getpid(), "gen": self.spec.gen}
        op = message.get("op")
        sessions = self.runtime.sessions()
        if op == "sessions":
            port = message.get("port")
            found = [s for s in sessions if not port or s.port_alias == port]
            limit = int(message.get("limit") or 1000)
            reply["total"] = len(found)
            reply["sessions"] = [
                dict(s.describe(), pid=os.getpid(), gen=self.spec.gen) for s in found[:limit]
            ]
        elif op == "close_session":
            session = next((s for s in sessions if s.id == message.get("session")), None)
            if session is not None:
                reason = str(message.get("reason", "")).encode()[:120].decode(errors="ignore")
                session.close(int(message.get("code", CloseCode.NORMAL)), reason)
            reply["closed"] = session is not None
        else:
            reply["error"] = f"unknown op {op!r}"
        self._send(relay.encode_json(relay.REPLY, reply))

    def _heartbeat_loop(self) -> None:
        while True:
            self.spec.heartbeat.beat()
            if os.getppid() != self.spec.master_pid:
                self._master_gone("parent changed")
            self.gevent.sleep(HEARTBEAT_INTERVAL)

    def _load_loop(self) -> None:
        while self.phase == "serving":
            self.publish_load()
            self.gevent.sleep(LOAD_INTERVAL)

    def _master_gone(self, why: str) -> None:
        if self.phase == "serving":
            log(logger, "warning", "master is gone: stopping", gen=self.spec.gen, why=why)
        self.stop("master gone")
