"""One worker's runtime: an acceptor per listening port, the sessions, graceful stop.

The caller binds the listeners (the master in prefork mode, the CLI in single-process mode)
and hands them over; this module only accepts on them.
"""

from __future__ import annotations

import _socket
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any, cast

import gevent
from gevent import socket as gsocket
from gevent.event import Event
from gevent.hub import Waiter

from wsserver import metrics
from wsserver.adapters.service import build_adapters
from wsserver.config import Config, PortConfig
from wsserver.logs import log
from wsserver.metrics import adapter_observer
from wsserver.protocol import CloseCode
from wsserver.protocol.address import format_peer
from wsserver.runtime.dispatcher import Dispatcher, RawConnection, load_mounts
from wsserver.runtime.groups import Groups
from wsserver.runtime.limits import ConnectionTable
from wsserver.runtime.listeners import BoundListener
from wsserver.runtime.pool import ExecutorPool, Scheduler
from wsserver.runtime.session import Session
from wsserver.runtime.tls import wrap_server_socket
from wsserver.security.access import IPRules
from wsserver.security.adapter_tls import registry_setup
from wsserver.security.auth import Authenticator
from wsserver.security.ocsp_check import client_check_for
from wsserver.security.ratelimit_shared import SharedAuthLimits
from wsserver.security.stapling import start_stapling, stop_stapling
from wsserver.security.tls import tls_for_config
from wsserver.security.users import UserTable

logger = logging.getLogger("wsserver.worker")


class PortRuntime:
    """The acceptor of one port: accept, IP rule, TCP_NODELAY, spawn the dispatcher."""

    def __init__(
        self, port: PortConfig, listener: BoundListener, dispatcher: Dispatcher, tls_context: Any = None
    ) -> None:
        self.port = port
        self.tls_context = tls_context  # an OpenSSL.SSL.Context for wss ports (security/tls.py)
        self.listener = listener
        self.dispatcher = dispatcher
        self.ip_rules = IPRules.from_config(port.access)
        self.proxy_protocol = port.proxy_protocol != "off"  # only trusted proxies may connect
        # A duplicate of the listening fd: closing it stops this worker's accepting while the
        # inherited socket stays open for the others. Its accept() gives raw sockets.
        self.sock: Any = AcceptSocket(listener.sock)
        # Handshakes in progress (for the load and a graceful stop): one token per busy runner.
        self.greenlets: set[Any] = set()
        self._runners = HandshakeRunners(self.dispatcher.handle, self.greenlets)
        self._acceptor: gevent.Greenlet | None = None

    def start(self) -> None:
        self._acceptor = gevent.spawn(self._accept_loop)

    def stop_accepting(self) -> None:
        if self._acceptor is not None:
            self._acceptor.kill(block=False)
            self._acceptor = None
        self._runners.stop()
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        # Accepts until none is pending, then waits for the listening socket to be readable:
        # one wake-up serves every connection that arrived meanwhile (a BalancedListener in
        # prefork mode waits inside its accept() instead).
        hub = gevent.get_hub()
        readable = hub.loop.io(self.sock.fileno(), 1)
        in_a_row = 0
        try:
            while True:
                try:
                    conn, peer = self.sock.accept()
                except _AGAIN:
                    in_a_row = 0
                    hub.wait(readable)
                    continue
                except OSError as exc:
                    log(logger, "warning", "accept failed", port=self.port.alias, error=str(exc))
                    gevent.sleep(0.05)
                    continue
                self._admit(conn, peer)
                in_a_row += 1
                if in_a_row >= ACCEPT_BATCH:  # let the handshakes run before accepting more
                    in_a_row = 0
                    gevent.sleep(0)
        finally:
            readable.close()

    def _admit(self, conn: Any, peer: Any) -> None:
        if self.proxy_protocol and not self.dispatcher.proxies.trusts(peer[0]):
            log(logger, "info", "proxy header from an untrusted peer", port=self.port.alias, peer=peer[0])
            self.dispatcher.stats.reject("proxy_untrusted")
            conn.close()
            return
        if not self.ip_rules.allows(peer[0]) and not self.dispatcher.proxies.trusts(peer[0]):
            log(logger, "info", "connection refused by IP rule", port=self.port.alias, peer=peer[0])
            self.dispatcher.stats.reject("ip")
            conn.close()
            return
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if type(conn) is _socket.socket:  # from AcceptSocket (a stand-in may give gevent sockets)
            conn.setblocking(False)
            if self.tls_context is not None:
                conn = gsocket.socket(conn.family, socket.SOCK_STREAM, fileno=conn.detach())
        if self.tls_context is not None:  # the TLS handshake runs in the dispatcher's first recv
            conn = wrap_server_socket(conn, self.tls_context, peer, self.port.alias)
        elif type(conn) is _socket.socket:
            conn = RawConnection(conn)
        self._runners.run(conn, peer)


ACCEPT_BATCH = 64  # connections accepted in a row before the acceptor yields
_AGAIN = (BlockingIOError, InterruptedError)


class AcceptSocket:
    """A port's listening socket in one worker: a non-blocking duplicate of the inherited fd.

    ``accept()`` returns a raw ``_socket.socket`` (no gevent wrapper: the dispatcher's
    ``RawConnection`` or the TLS wrapper takes it) or raises BlockingIOError when none is
    pending, which is also what prefork's BalancedListener expects of the socket it wraps.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.family = sock.family
        self._sock = _socket.socket(sock.family, socket.SOCK_STREAM, 0, _socket.dup(sock.fileno()))
        self._sock.setblocking(False)

    def accept(self) -> tuple[Any, Any]:
        # _socket.socket._accept() (fd, address: no socket object made) is not in typeshed.
        fd, peer = self._sock._accept()  # type: ignore[attr-defined]
        return _socket.socket(self.family, socket.SOCK_STREAM, 0, fd), peer

    def settimeout(self, timeout: float | None) -> None:
        """Ignored: the socket is always non-blocking (the acceptor waits with a watcher)."""

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class HandshakeRunners:
    """Greenlets that run one handshake after another, parked on a Waiter in between.

    A switch to a parked greenlet costs a fraction of ``gevent.spawn`` plus a greenlet's end
    and link. A runner whose handshake blocks (a slow client, authentication) just keeps its
    connection; a new runner is spawned when none is parked. While a runner works, its token
    (an Event, set when it is done) is in ``busy``: the load, and what a graceful stop waits for.
    """

    MAX_IDLE = 64  # parked runners kept; more exit when done

    def __init__(self, fn: Any, busy: set[Any]) -> None:
        self.fn = fn
        self.busy = busy
        self.idle: list[tuple[Waiter[tuple[Any, ...]], Event, gevent.Greenlet]] = []
        self._stopped = False

    def run(self, *args: Any) -> None:
        """Run ``fn(*args)`` on a runner (call from a greenlet or the hub; never blocks)."""
        if self.idle:
            waiter, token, _ = self.idle.pop()
            token.clear()
            self.busy.add(token)
            gevent.get_hub().loop.run_callback(waiter.switch, args)
        else:
            token = Event()
            self.busy.add(token)
            gevent.spawn(self._runner, args, token)

    def _runner(self, args: tuple, token: Event) -> None:
        fn, busy, idle = self.fn, self.busy, self.idle
        while True:
            try:
                fn(*args)
            except Exception:  # the dispatcher logs its own failures; this is a last resort
                log(logger, "error", "handshake runner failed", exc_info=True)
            finally:
                busy.discard(token)
                token.set()
            if self._stopped or len(idle) >= self.MAX_IDLE:
                return
            waiter: Waiter[tuple[Any, ...]] = Waiter()
            # Once per handshake, not per message; a runner is a gevent.spawn()ed Greenlet.
            idle.append((waiter, token, cast(gevent.Greenlet, gevent.getcurrent())))
            args = waiter.get()

    def stop(self) -> None:
        """Parked runners exit; busy ones exit when their handshake is done."""
        self._stopped = True
        idle, self.idle = self.idle, []
        for _, _, glet in idle:
            glet.kill(block=False)


class WorkerRuntime:
    """All ports of one worker process."""

    def __init__(
        self,
        config: Config,
        listeners: Sequence[BoundListener],
        connections: ConnectionTable | None = None,
        row: int = 0,
        auth_limits: SharedAuthLimits | None = None,
    ) -> None:
        self.config = config
        # Without a master (tests, embedding) this worker's own table counts alone.
        connections = connections if connections is not None else ConnectionTable(rows=1)
        self.mounts = load_mounts(config)
        by_alias = {bl.alias: bl for bl in listeners}
        self.scheduler = Scheduler()
        # This worker's groups: every port's sessions, the relay to the master or the broker.
        self.groups = Groups()
        users = UserTable(config.users)
        # Built here, in the worker, after gevent's monkey-patching: backend sockets cooperate.
        # Their truststore/keystore/key_alias name the config's [[truststores]]/[[keystores]].
        self.adapters = (
            build_adapters(config.adapters, observer=adapter_observer, tls_setup=registry_setup(config))
            if config.adapters
            else {}
        )
        self.ports: list[PortRuntime] = []
        for port in config.active_ports():
            listener = by_alias.get(port.alias)
            if listener is None:
                continue
            pool = ExecutorPool(port.alias, port.pool, self.scheduler)
            counter = connections.counter(
                port.alias, row, port.max_connections, port.max_connections_per_worker
            )
            stats = metrics.PortStats()
            auth = Authenticator.from_config(
                port, config, users=users, adapters=self.adapters, observer=stats.auth_observer
            )
            # Under the master the failure buckets are the server's, not this worker's alone.
            shared = auth_limits.limiter_for(port) if auth_limits is not None else None
            if shared is not None:
                auth.limiter = shared
            tls_context = tls_for_config(config).ports[port.alias].context if port.protocol == "wss" else None
            dispatcher = Dispatcher(
                port, self.mounts, pool, counter, auth=auth, stats=stats, groups=self.groups
            )
            if tls_context is not None:
                dispatcher.ocsp = client_check_for(port, self.adapters, tls_for_config(config))
            self.ports.append(PortRuntime(port, listener, dispatcher, tls_context))
        self.stopped = Event()
        # [metrics]: each port's counts go to the metric files every FLUSH_INTERVAL and at the end.
        self.metrics = (
            {p.port.alias: metrics.PortMetrics(p.port.alias) for p in self.ports}
            if config.metrics.enabled
            else {}
        )
        self._publisher: gevent.Greenlet | None = None

    def sessions(self) -> list[Session]:
        return [s for p in self.ports for s in p.dispatcher.sessions.values()]

    def start(self) -> None:
        self.staplers = start_stapling([p.tls_context for p in self.ports])  # [ports.tls] ocsp_stapling
        for port in self.ports:
            port.start()
            log(
                logger,
                "info",
                "listening",
                port=port.port.alias,
                address=format_peer(port.listener.address),
                backlog=port.listener.effective_backlog,
            )
        if self.metrics:
            self._publisher = gevent.spawn(self._publish_loop)

    def publish_metrics(self) -> None:
        """Move every port's counts into the metric files (wsserver.metrics); quick, on the hub."""
        for port in self.ports:
            dispatcher = port.dispatcher
            self.metrics[port.port.alias].publish(dispatcher.stats, len(dispatcher.sessions), dispatcher.pool)

    def _publish_loop(self) -> None:
        while True:
            gevent.sleep(metrics.FLUSH_INTERVAL)
            try:
                self.publish_metrics()
            except Exception:
                log(logger, "error", "publishing metrics failed", exc_info=True)

    def stop(self, graceful_timeout: float) -> None:
        """Stop accepting, close every session with 1001, wait up to ``graceful_timeout``."""
        for port in self.ports:
            port.stop_accepting()
        sessions = self.sessions()
        for session in sessions:
            session.close(CloseCode.GOING_AWAY, "going away")
        deadline = time.monotonic() + graceful_timeout
        handshakes = [g for p in self.ports for g in p.greenlets]
        gevent.joinall(handshakes, timeout=graceful_timeout)
        remaining = [s for s in sessions if not s.wait_closed(max(0.0, deadline - time.monotonic()))]
        if remaining:
            log(logger, "warning", "graceful timeout: dropping sessions", remaining=len(remaining))
            for session in remaining:
                session.abort()
        self.scheduler.stop()
        stop_stapling(getattr(self, "staplers", []))
        if self._publisher is not None:
            self._publisher.kill(block=False)
            self.publish_metrics()
        self.stopped.set()
