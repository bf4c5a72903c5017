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

import gevent

from wsserver.config import Config, EndpointConfig, PortConfig
from wsserver.endpoints.base import Endpoint
from wsserver.logs import log
from wsserver.protocol import Handshake, HandshakeError, HandshakeRequest, origin_allowed
from wsserver.runtime.limits import PortCounter
from wsserver.runtime.pool import ExecutorPool
from wsserver.runtime.session import RECV_SIZE, Session
from wsserver.runtime.transport import PlainTransport
from wsserver.security.access import endpoint_allowed

logger = logging.getLogger("wsserver.dispatcher")


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


def decide(request: HandshakeRequest, port: PortConfig, mounts: dict[str, Mount], scheme: str) -> Mount | Refusal:
    """Route and check one upgrade request against the port's rules."""
    mount = mounts.get(request.path)
    if mount is None:
        return Refusal(404, "not_found")
    if not endpoint_allowed(port.access, request.path):
        return Refusal(403, "endpoint_forbidden")
    origin = port.origin
    if not origin_allowed(request.origin, request.host, scheme, origin.same_origin, origin.allowed,
                          origin.allow_missing):
        return Refusal(403, "origin")
    return mount


_STATUS_TEXT = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 426: "Upgrade Required",
                431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class Dispatcher:
    """Turns accepted connections of one port into sessions."""

    def __init__(self, port: PortConfig, mounts: dict[str, Mount], pool: ExecutorPool,
                 counter: PortCounter) -> None:
        self.port = port
        self.mounts = mounts
        self.pool = pool
        self.counter = counter
        self.sessions: dict[str, Session] = {}
        self.scheme = "https" if port.protocol == "wss" else "http"

    def handle(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        started = time.monotonic()
        try:
            result = self._handshake(sock, peer)
        except Exception:
            log(logger, "error", "handshake failed", exc_info=True, port=self.port.alias, peer=_peer(peer))
            _close(sock)
            return
        if result is None:
            _close(sock)
            return
        session = result
        log(logger, "debug", "session opened", port=self.port.alias, peer=_peer(peer), session=session.id,
            path=session.path, handshake_ms=round((time.monotonic() - started) * 1000, 2))
        self.sessions[session.id] = session
        # From here on the session lives in hub callbacks: this greenlet ends.
        session.start()

    def _handshake(self, sock: socket.socket, peer: tuple[str, int]) -> Session | None:
        port = self.port
        hs = Handshake(max_header_size=port.max_header_size)
        timeout = gevent.Timeout(port.handshake_timeout_ms / 1000)
        timeout.start()
        try:
            request = None
            while request is None:
                data = sock.recv(RECV_SIZE)
                hs.receive_data(data)
                request = hs.next_request()
                if request is None and not data:
                    return None
        except HandshakeError as exc:
            log(logger, "info", "handshake refused", port=port.alias, peer=_peer(peer), status=exc.status,
                reason=exc.reason)
            if exc.response:
                _send_quietly(sock, exc.response)
            return None
        except gevent.Timeout as exc:
            if exc is not timeout:
                raise
            log(logger, "info", "handshake timeout", port=port.alias, peer=_peer(peer))
            return None
        except OSError:
            return None
        finally:
            timeout.close()

        decision = decide(request, port, self.mounts, self.scheme)
        if not isinstance(decision, Refusal):
            full = self.counter.try_add()
            if full is not None:
                decision = Refusal(503, full)
        if isinstance(decision, Refusal):
            log(logger, "info", "handshake refused", port=port.alias, peer=_peer(peer), path=request.path,
                status=decision.status, reason=decision.reason)
            _send_quietly(sock, hs.reject(decision.status, _STATUS_TEXT.get(decision.status, "")))
            return None
        mount = decision
        subprotocol = choose_subprotocol(request.subprotocols, mount.subprotocols)
        response, proto = hs.accept(request, subprotocol=subprotocol, compression=port.compression,
                                    max_message_size=port.max_message_size)
        if not _send_quietly(sock, response):
            self.counter.remove()
            return None
        return Session(PlainTransport(sock), peer, port, request.path, mount.endpoint, proto, self.pool,
                       subprotocol=subprotocol, on_end=self._ended, query=request.query)

    def _ended(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.counter.remove()
        log(logger, "debug", "session closed", port=self.port.alias, peer=_peer(session.remote_address),
            session=session.id, code=session.close_code, messages_in=session.messages_in,
            messages_out=session.messages_out)


def _peer(peer: tuple) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _send_quietly(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
