"""One worker's runtime: an acceptor per listening port, the sessions, graceful stop.

The caller binds the listeners (the master in prefork mode, the CLI in single-process mode)
and hands them over; this module only accepts on them.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

import gevent
from gevent import socket as gsocket
from gevent.event import Event

from wsserver import metrics
from wsserver.adapters.service import build_adapters
from wsserver.config import Config, PortConfig
from wsserver.logs import log
from wsserver.metrics import adapter_observer
from wsserver.runtime.dispatcher import Dispatcher, load_mounts
from wsserver.runtime.limits import ConnectionTable
from wsserver.runtime.listeners import BoundListener
from wsserver.runtime.pool import ExecutorPool, Scheduler
from wsserver.runtime.session import Session
from wsserver.runtime.tls import wrap_server_socket
from wsserver.security.access import IPRules
from wsserver.security.auth import Authenticator
from wsserver.security.tls import tls_for_config
from wsserver.security.users import UserTable

logger = logging.getLogger("wsserver.worker")


class PortRuntime:
    """The acceptor of one port: accept, IP rule, TCP_NODELAY, spawn the dispatcher."""

    def __init__(self, port: PortConfig, listener: BoundListener, dispatcher: Dispatcher,
                 tls_context: Any = None) -> None:
        self.port = port
        self.tls_context = tls_context  # an OpenSSL.SSL.Context for wss ports (security/tls.py)
        self.listener = listener
        self.dispatcher = dispatcher
        self.ip_rules = IPRules.from_config(port.access)
        # A gevent socket on a duplicate of the listening fd: closing it stops this worker's
        # accepting while the inherited socket stays open for the others.
        self.sock = gsocket.fromfd(listener.sock.fileno(), listener.sock.family, socket.SOCK_STREAM)
        self.greenlets: set[gevent.Greenlet] = set()
        self._acceptor: gevent.Greenlet | None = None

    def start(self) -> None:
        self._acceptor = gevent.spawn(self._accept_loop)

    def stop_accepting(self) -> None:
        if self._acceptor is not None:
            self._acceptor.kill(block=False)
            self._acceptor = None
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError as exc:
                log(logger, "warning", "accept failed", port=self.port.alias, error=str(exc))
                gevent.sleep(0.05)
                continue
            if not self.ip_rules.allows(peer[0]) and not self.dispatcher.proxies.trusts(peer[0]):
                log(logger, "info", "connection refused by IP rule", port=self.port.alias, peer=peer[0])
                self.dispatcher.stats.reject("ip")
                conn.close()
                continue
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            if self.tls_context is not None:  # the TLS handshake runs in the dispatcher's first recv
                conn = wrap_server_socket(conn, self.tls_context, peer, self.port.alias)
            glet = gevent.spawn(self.dispatcher.handle, conn, peer)
            self.greenlets.add(glet)
            glet.link(self.greenlets.discard)


class WorkerRuntime:
    """All ports of one worker process."""

    def __init__(self, config: Config, listeners: Sequence[BoundListener],
                 connections: ConnectionTable | None = None, row: int = 0) -> None:
        self.config = config
        # Without a master (tests, embedding) this worker's own table counts alone.
        connections = connections if connections is not None else ConnectionTable(rows=1)
        self.mounts = load_mounts(config)
        by_alias = {bl.alias: bl for bl in listeners}
        self.scheduler = Scheduler()
        users = UserTable(config.users)
        # Built here, in the worker, after gevent's monkey-patching: backend sockets cooperate.
        self.adapters = build_adapters(config.adapters, observer=adapter_observer) if config.adapters else {}
        self.ports: list[PortRuntime] = []
        for port in config.active_ports():
            listener = by_alias.get(port.alias)
            if listener is None:
                continue
            pool = ExecutorPool(port.alias, port.pool, self.scheduler)
            counter = connections.counter(port.alias, row, port.max_connections, port.max_connections_per_worker)
            stats = metrics.PortStats()
            auth = Authenticator.from_config(port, config, users=users, adapters=self.adapters,
                                             observer=stats.auth_observer)
            tls_context = tls_for_config(config).ports[port.alias].context if port.protocol == "wss" else None
            dispatcher = Dispatcher(port, self.mounts, pool, counter, auth=auth, stats=stats)
            self.ports.append(PortRuntime(port, listener, dispatcher, tls_context))
        self.stopped = Event()
        # [metrics]: each port's counts go to the metric files every FLUSH_INTERVAL and at the end.
        self.metrics = {p.port.alias: metrics.PortMetrics(p.port.alias) for p in self.ports} \
            if config.metrics.enabled else {}
        self._publisher: gevent.Greenlet | None = None

    def sessions(self) -> list[Session]:
        return [s for p in self.ports for s in p.dispatcher.sessions.values()]

    def start(self) -> None:
        for port in self.ports:
            port.start()
            log(logger, "info", "listening", port=port.port.alias,
                address=_address_text(port.listener.address), backlog=port.listener.effective_backlog)
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
            session.close(1001, "going away")
        deadline = time.monotonic() + graceful_timeout
        handshakes = [g for p in self.ports for g in p.greenlets]
        gevent.joinall(handshakes, timeout=graceful_timeout)
        remaining = [s for s in sessions if not s.wait_closed(max(0.0, deadline - time.monotonic()))]
        if remaining:
            log(logger, "warning", "graceful timeout: dropping sessions", remaining=len(remaining))
            for session in remaining:
                session.abort()
        self.scheduler.stop()
        if self._publisher is not None:
            self._publisher.kill(block=False)
            self.publish_metrics()
        self.stopped.set()


def _address_text(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
