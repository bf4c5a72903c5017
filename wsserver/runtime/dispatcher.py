"""The dispatcher: from an accepted socket to a running Session.

Reads the upgrade request under the port's handshake timeout, applies the port's rules
(route, endpoint access, origin, connection limit) and answers with the right HTTP status
when it refuses. The decisions are plain functions of the request; only the reading and
writing here touch the socket.
"""

from __future__ import annotations

import importlib
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol, cast

import gevent

from wsserver.config import Config, EndpointConfig, PortConfig
from wsserver.endpoints.base import Endpoint
from wsserver.logs import log
from wsserver.metrics import PortStats
from wsserver.protocol import Handshake, HandshakeError, HandshakeRequest, host_allowed, origin_allowed
from wsserver.protocol.address import format_peer
from wsserver.protocol.proxy import ProxyHeaderParser, ProxyProtocolError
from wsserver.runtime.auth_step import run_auth
from wsserver.runtime.groups import Groups
from wsserver.runtime.limits import PortCounter
from wsserver.runtime.pool import ExecutorPool
from wsserver.runtime.session import RECV_SIZE, Session
from wsserver.runtime.tls import TLSSocket, make_transport  # TLS or plain
from wsserver.security.access import IPRules, ProxyTrust, endpoint_allowed
from wsserver.security.auth import Authenticator
from wsserver.security.users import UserTable

logger = logging.getLogger("wsserver.dispatcher")


class Connection(Protocol):
    """An accepted connection as the handshake uses it: a ``RawConnection``, a
    ``runtime.tls.TLSSocket`` (wss ports) or a (gevent) socket."""

    def recv(self, size: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...

    def close(self) -> None: ...


class EndpointLoadError(Exception):
    """A handler named in the config cannot be imported or is not an Endpoint."""


def load_endpoint(cfg: EndpointConfig, index: int, source: str) -> Endpoint:
    """Import ``module:Class`` and instantiate it; errors name the config key."""
    key = f"{source}: endpoints[{index}].handler = {cfg.handler!r}"
    module_name, _, class_name = cfg.handler.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise EndpointLoadError(f"{key}: cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise EndpointLoadError(f"{key}: module {module_name!r} has no attribute {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Endpoint)):
        raise EndpointLoadError(f"{key}: {class_name} is not a subclass of wsserver.Endpoint")
    try:
        return cls()
    except Exception as exc:
        raise EndpointLoadError(f"{key}: {class_name}() raised {exc!r}") from exc


@dataclass(frozen=True)
class Mount:
    path: str
    endpoint: Endpoint
    subprotocols: tuple[str, ...]


def load_mounts(config: Config) -> dict[str, Mount]:
    mounts = {}
    for index, cfg in enumerate(config.endpoints):
        if config.package_enabled(cfg.package):
            mounts[cfg.path] = Mount(cfg.path, load_endpoint(cfg, index, config.source), cfg.subprotocols)
    return mounts


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str  # the counted reason, e.g. "not_found"; the body says the status only


def choose_subprotocol(offered: tuple[str, ...], supported: tuple[str, ...]) -> str | None:
    """The server's preference order wins among what the client offered."""
    return next((p for p in supported if p in offered), None)


def decide(
    request: HandshakeRequest, port: PortConfig, mounts: dict[str, Mount], scheme: str
) -> Mount | Refusal:
    """Route and check one upgrade request against the port's rules."""
    mount = mounts.get(request.path)
    if mount is None:
        return Refusal(404, "not_found")
    if not endpoint_allowed(port.access, request.path):
        return Refusal(403, "endpoint_forbidden")
    origin = port.origin
    if not host_allowed(request.host, scheme, origin.hosts):
        return Refusal(403, "host")  # not one of the server's own names (DNS rebinding)
    if not origin_allowed(
        request.origin,
        request.host,
        scheme,
        origin.same_origin,
        origin.allowed,
        origin.allow_missing,
        origin.hosts,
    ):
        return Refusal(403, "origin")
    return mount


# Counted refusal reasons (wsserver_connections_rejected_total{reason}) of HandshakeError statuses.
_HANDSHAKE_ERRORS = {0: "incomplete", 400: "bad_request", 426: "version", 431: "headers_too_large"}


class Dispatcher:
    """Turns accepted connections of one port into sessions."""

    def __init__(
        self,
        port: PortConfig,
        mounts: dict[str, Mount],
        pool: ExecutorPool,
        counter: PortCounter,
        auth: Authenticator | None = None,
        stats: PortStats | None = None,
        groups: Groups | None = None,
    ) -> None:
        self.port = port
        self.groups = groups if groups is not None else Groups()  # the worker's: its sessions share it
        self.stats = stats if stats is not None else PortStats()  # counts for wsserver.metrics
        self.counter = counter  # connections of this port across workers (max_connections)
        self.auth = auth or Authenticator(port, UserTable())  # client authentication (security/auth.py)
        self.proxies, self.ip_rules = ProxyTrust.from_config(port.access), IPRules.from_config(port.access)
        self.mounts = mounts
        self.pool = pool
        self.sessions: dict[str, Session] = {}
        self.scheme = "https" if port.protocol == "wss" else "http"
        self.ocsp: Any = None  # [ports.tls] ocsp: security.ocsp_check.ClientCertificateCheck

    def handle(self, sock: Connection, peer: tuple[str, int]) -> None:
        started = time.monotonic()
        try:
            result = self._handshake(sock, peer)
        except Exception:
            log(
                logger,
                "error",
                "handshake failed",
                exc_info=True,
                port=self.port.alias,
                peer=format_peer(peer),
            )
            self.stats.reject("error")
            _close(sock)
            return
        if result is None:
            _close(sock)
            return
        session = result
        self.stats.handshake_done(time.monotonic() - started)
        if logger.isEnabledFor(logging.DEBUG):  # the fields cost more than the disabled call
            log(
                logger,
                "debug",
                "session opened",
                port=self.port.alias,
                peer=format_peer(peer),
                session=session.id,
                path=session.path,
                handshake_ms=round((time.monotonic() - started) * 1000, 2),
            )
        self.sessions[session.id] = session
        # From here on the session lives in hub callbacks: this greenlet ends.
        session.start()

    def _handshake(self, sock: Connection, peer: tuple[str, int]) -> Session | None:
        port = self.port
        hs = Handshake(max_header_size=port.max_header_size)
        timeout = gevent.Timeout(port.handshake_timeout_ms / 1000)
        timeout.start()
        deadline, refusal = time.monotonic() + port.handshake_timeout_ms / 1000, None
        try:
            request = None
            if port.proxy_protocol != "off":  # PROXY header first: it names the client
                client = self._proxy_header(sock, peer, hs)
                if client is None:
                    return None
                peer = client
                request = hs.next_request()
            if self.ocsp is not None:  # right after the TLS handshake (why there: security/ocsp_check.py)
                refusal = self.ocsp.check(sock, format_peer(peer), deadline)
            while request is None:
                data = sock.recv(RECV_SIZE)
                hs.receive_data(data)
                request = hs.next_request()
                if request is None and not data:
                    self.stats.reject(refusal.reason if refusal else "incomplete")
                    return None
        except HandshakeError as exc:
            if exc.status == 400 and port.health_path and hs.plain_get_path == port.health_path:
                # A load balancer's check (HAProxy option httpchk): counted, logged at debug only.
                self.stats.health_checks += 1
                log(logger, "debug", "health check", port=port.alias, peer=format_peer(peer))
                _send_quietly(sock, hs.reject(200, "ok"))
                return None
            self.stats.reject(_HANDSHAKE_ERRORS.get(exc.status, "bad_request"))
            log(
                logger,
                "info",
                "handshake refused",
                port=port.alias,
                peer=format_peer(peer),
                status=exc.status,
                reason=exc.reason,
            )
            if exc.response:
                _send_quietly(sock, exc.response)
            return None
        except gevent.Timeout as exc:
            if exc is not timeout:
                raise
            self.stats.reject(refusal.reason if refusal else "timeout")
            log(logger, "info", "handshake timeout", port=port.alias, peer=format_peer(peer))
            return None
        except OSError:
            self.stats.reject(refusal.reason if refusal else "incomplete")
            return None
        finally:
            timeout.close()

        if refusal is not None:  # answered once the request is read, before it is routed
            self.stats.reject(refusal.reason)
            _send_quietly(sock, hs.reject(refusal.status))
            return None
        if self.proxies.networks:  # behind a trusted proxy: its X-Forwarded-For names the client
            peer = (self.proxies.client_address(peer[0], request.header("x-forwarded-for")), peer[1])
            if not self.ip_rules.allows(peer[0]):
                log(
                    logger,
                    "info",
                    "handshake refused",
                    port=port.alias,
                    peer=format_peer(peer),
                    status=403,
                    reason="ip",
                )
                self.stats.reject("ip")
                _send_quietly(sock, hs.reject(403))
                return None
        decision = decide(request, port, self.mounts, self.scheme)
        if isinstance(decision, Refusal):
            log(
                logger,
                "info",
                "handshake refused",
                port=port.alias,
                peer=format_peer(peer),
                path=request.path,
                status=decision.status,
                reason=decision.reason,
            )
            self.stats.reject(decision.reason)
            _send_quietly(sock, hs.reject(decision.status))
            return None
        mount = decision
        # client_auth "certificate" is valid on wss ports only (config validation): sock is a TLSSocket.
        certificate = cast(TLSSocket, sock).peer_certificate() if self.auth.method == "certificate" else None
        auth = run_auth(
            self.auth, request, peer, format_peer(peer), self.pool, certificate
        )  # within auth_timeout_ms
        if not auth.ok:
            self.stats.reject(
                f"auth_{auth.result}"
            )  # missing, invalid, forbidden, rate_limited, timeout, error
            _send_quietly(sock, hs.reject(auth.status, headers=auth.headers))
            return None
        full = self.counter.try_add()
        if full is not None:
            log(
                logger,
                "info",
                "handshake refused",
                port=port.alias,
                peer=format_peer(peer),
                path=request.path,
                status=503,
                reason=full,
            )
            self.stats.reject(full)
            _send_quietly(sock, hs.reject(503))
            return None
        subprotocol = choose_subprotocol(request.subprotocols, mount.subprotocols)
        response, proto = hs.accept(
            request,
            subprotocol=subprotocol,
            compression=port.compression,
            max_message_size=port.max_message_size,
            compression_window_bits=port.compression_window_bits,
            compression_client_window_bits=port.compression_client_window_bits,
            compression_mem_level=port.compression_mem_level,
        )
        if not _send_quietly(sock, response):
            self.counter.remove()
            self.stats.reject("incomplete")
            return None
        return Session(
            make_transport(sock),
            peer,
            port,
            request.path,
            mount.endpoint,
            proto,
            self.pool,
            subprotocol=subprotocol,
            on_end=self._ended,
            stats=self.stats,
            query=self.auth.public_query(request.query),
            user=auth.user,
            groups=self.groups,
        )

    def _proxy_header(self, sock: Connection, peer: tuple[str, int], hs: Handshake) -> tuple[str, int] | None:
        """Read the PROXY header (under the caller's handshake timeout): the client's address, or
        None when the connection is refused. The bytes after the header go to ``hs``."""
        port = self.port
        if not self.proxies.trusts(peer[0]):  # _admit refuses these already; kept for other callers
            log(
                logger, "info", "proxy header from an untrusted peer", port=port.alias, peer=format_peer(peer)
            )
            self.stats.reject("proxy_untrusted")
            return None
        parser = ProxyHeaderParser(port.proxy_protocol)
        plain = getattr(sock, "recv_plain", None)  # a wss port: the TLS handshake follows the header
        try:
            header = None
            while header is None:
                if plain is None:
                    header = parser.feed(sock.recv(RECV_SIZE))
                    continue
                # Take the header's bytes only and leave the rest (the ClientHello) to TLS: peek,
                # then consume what the parser used (all of it while the header is incomplete).
                data = plain(RECV_SIZE, socket.MSG_PEEK)
                header = parser.feed(data)
                used = len(data) - (len(header.rest) if header is not None else 0)
                while used > 0:
                    taken = len(plain(used))
                    if not taken:
                        raise ProxyProtocolError("connection closed in the PROXY header")
                    used -= taken
        except ProxyProtocolError as exc:
            log(
                logger,
                "info",
                "proxy header refused",
                port=port.alias,
                peer=format_peer(peer),
                reason=str(exc),
            )
            self.stats.reject("proxy_invalid")
            return None
        client = peer if header.source is None else header.source
        if header.rest and plain is None:
            hs.receive_data(header.rest)
        if header.source is not None and not self.ip_rules.allows(client[0]):  # the proxy passed at accept
            log(
                logger,
                "info",
                "connection refused by IP rule",
                port=port.alias,
                peer=format_peer(client),
                proxy=format_peer(peer),
            )
            self.stats.reject("ip")
            return None
        return client

    def _ended(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.stats.session_ended(session.close_code, time.monotonic() - session.started)
        self.counter.remove()
        if logger.isEnabledFor(logging.DEBUG):
            log(
                logger,
                "debug",
                "session closed",
                port=self.port.alias,
                peer=format_peer(session.remote_address),
                session=session.id,
                code=session.close_code,
                messages_in=session.messages_in,
                messages_out=session.messages_out,
            )


_AGAIN = (BlockingIOError, InterruptedError)


class RawConnection:
    """An accepted plain TCP socket as the handshake uses it, without gevent's socket wrapper.

    ``recv`` and ``sendall`` wait cooperatively (a hub watcher, created on the first wait);
    ``detach`` hands the fd on to the session's transport. gevent's socket object costs a
    wrapper, two watchers and a timeout per connection, and its ``sendall`` a getsockopt per
    call; this keeps only what the handshake needs.
    """

    __slots__ = ("_reader", "_sock", "_writer")

    def __init__(self, sock: Any) -> None:
        self._sock = sock  # a non-blocking _socket.socket
        self._reader: Any = None
        self._writer: Any = None

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self._sock.recv(size)
            except _AGAIN:
                if self._reader is None:
                    self._reader = gevent.get_hub().loop.io(self._sock.fileno(), 1)
                gevent.get_hub().wait(self._reader)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self._sock.send(view)
            except _AGAIN:
                sent = 0
            view = view[sent:]
            if view:
                if self._writer is None:
                    self._writer = gevent.get_hub().loop.io(self._sock.fileno(), 2)
                gevent.get_hub().wait(self._writer)

    def _drop_watchers(self) -> None:
        for watcher in (self._reader, self._writer):
            if watcher is not None:
                watcher.close()
        self._reader = self._writer = None

    def detach(self) -> int:
        self._drop_watchers()
        return self._sock.detach()

    def close(self) -> None:
        self._drop_watchers()
        self._sock.close()


def _send_quietly(sock: Connection, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _close(sock: Connection) -> None:
    try:
        sock.close()
    except OSError:
        pass
