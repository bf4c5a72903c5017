"""TLS on an accepted gevent socket: a pyOpenSSL ``SSL.Connection`` on the socket's file
descriptor, driven by gevent's event loop.

:class:`TLSSocket` has the socket methods the dispatcher and the session use (``recv``,
``sendall``, ``settimeout``, ``setsockopt``, ``close``...), so wss connections go through the
same code as ws ones. The TLS handshake is not done in the acceptor: it runs on the first
``recv`` (the dispatcher's, inside its ``handshake_timeout_ms`` timer), so a slow or silent
client never holds up accepting and the TLS handshake and the HTTP upgrade share one deadline.

How it waits: every OpenSSL call is tried first; ``WantRead``/``WantWrite`` park the greenlet on
the gevent socket's own read/write watcher (honouring its timeout, like gevent's ``ssl``),
then the call is retried. The session reads from one greenlet and writes from others (under
its write lock): the reader owns the read watcher and writers the write watcher. When a call
needs the other direction (a read that must first write, e.g. a TLS 1.3 key update) and that
watcher is busy, it polls briefly instead of sharing the watcher.

Why pyOpenSSL and not gevent's ``ssl``: see ``bench/tls_micro.py`` and docs/tls.md.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any

import gevent
from cryptography import x509
from OpenSSL import SSL

from wsserver.logs import log
from wsserver.runtime.transport import PlainTransport, WantRead, WantWrite

logger = logging.getLogger("wsserver.tls")

_POLL = 0.002  # seconds between retries when the other direction's watcher is busy
_PLAIN_BODY = b"This port speaks TLS: use wss:// (or https://).\n"
_PLAIN_HTTP_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                      b"Content-Length: " + str(len(_PLAIN_BODY)).encode() + b"\r\n\r\n" + _PLAIN_BODY)


class TLSError(OSError):
    """A TLS failure (handshake refused, bad record, ...). An OSError, so callers that treat
    socket errors as "connection gone" need no TLS-specific code."""

    def __init__(self, reason: str, during_handshake: bool) -> None:
        super().__init__(errno.ECONNABORTED, reason)
        self.reason = reason
        self.during_handshake = during_handshake


def ssl_error_reason(exc: BaseException) -> str:
    """OpenSSL's reason text(s) of an SSL.Error, e.g. "peer did not return a certificate"."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list):
        reasons = [str(part[2]) for part in args[0] if isinstance(part, tuple) and len(part) > 2 and part[2]]
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
    return str(exc) or type(exc).__name__


class TLSSocket:
    """A server-side TLS connection over an accepted gevent socket (see the module doc)."""

    __slots__ = ("_closed", "_conn", "_established", "_port_alias", "_read_event", "_sock", "_write_event",
                 "handshake_seconds", "peer")

    def __init__(self, sock: Any, context: SSL.Context, peer: tuple | None = None, port_alias: str = "") -> None:
        self._sock = sock
        self._conn = SSL.Connection(context, sock)
        self._conn.set_accept_state()
        self._read_event = sock._read_event
        self._write_event = sock._write_event
        self._closed = False
        self._established = False
        self._port_alias = port_alias
        self.peer = peer
        self.handshake_seconds: float | None = None

    # ---- TLS facts -------------------------------------------------------------------------
    @property
    def established(self) -> bool:
        return self._established

    @property
    def connection(self) -> SSL.Connection:
        return self._conn

    def peer_certificate(self) -> x509.Certificate | None:
        """The client's certificate; verified against the truststore when the port asks for one."""
        if not self._established:
            return None
        return self._conn.get_peer_certificate(as_cryptography=True)

    def version(self) -> str | None:
        return self._conn.get_protocol_version_name() if self._established else None

    def cipher(self) -> str | None:
        return self._conn.get_cipher_name() if self._established else None

    def alpn_protocol(self) -> str | None:
        proto = self._conn.get_alpn_proto_negotiated() if self._established else b""
        return proto.decode("ascii", "replace") if proto else None

    # ---- the handshake ---------------------------------------------------------------------
    def do_handshake(self) -> None:
        """Run the TLS handshake now (``recv``/``sendall`` run it when needed). Raises TLSError,
        OSError or the socket timeout."""
        if self._established:
            return
        started = time.monotonic()
        conn = self._conn
        while True:
            self._check_open()
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                self._wait(self._read_event)
            except SSL.WantWriteError:
                self._wait(self._write_event)
            except SSL.SysCallError as exc:
                if exc.args and exc.args[0] == -1:  # closed without a word (port probes, scanners)
                    log(logger, "debug", "tls handshake: connection closed", port=self._port_alias,
                        peer=_peer_text(self.peer))
                    raise TLSError(_syscall_reason(exc), True) from None
                raise self._failed(_syscall_reason(exc), handshake=True) from None
            except SSL.Error as exc:
                reason = ssl_error_reason(exc)
                if reason == "http request":
                    self._answer_plain_http()
                raise self._failed(reason, handshake=True) from None
        self._established = True
        self.handshake_seconds = time.monotonic() - started

    def _answer_plain_http(self) -> None:
        """A plain HTTP request on a TLS port gets a readable 400 (as nginx does), once, unencrypted."""
        try:
            self._sock.send(_PLAIN_HTTP_ANSWER)  # one non-blocking attempt; the socket is closed next
        except OSError:
            pass

    def _failed(self, reason: str, handshake: bool) -> TLSError:
        if handshake:
            log(logger, "info", "tls handshake failed", port=self._port_alias, peer=_peer_text(self.peer),
                reason=reason)
        return TLSError(reason, handshake)

    # ---- data ------------------------------------------------------------------------------
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if not self._established:
            self.do_handshake()
        conn = self._conn
        while True:
            self._check_open()
            try:
                return conn.recv(bufsize)
            except SSL.WantReadError:
                self._wait(self._read_event)
            except SSL.ZeroReturnError:
                return b""  # close_notify from the peer
            except SSL.WantWriteError:
                self._wait(self._write_event)
            except SSL.SysCallError as exc:
                if exc.args and exc.args[0] in (-1, errno.ECONNRESET, errno.EPIPE):
                    return b""  # EOF without close_notify, or a reset: the connection is gone
                raise self._failed(_syscall_reason(exc), handshake=False) from None
            except SSL.Error as exc:
                raise self._failed(ssl_error_reason(exc), handshake=False) from None

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        if not self._established:
            self.do_handshake()
        conn = self._conn
        view = memoryview(data)
        while view:
            self._check_open()
            try:
                sent = conn.send(view)
            except SSL.WantWriteError:
                self._wait(self._write_event)
                continue
            except SSL.WantReadError:
                self._wait(self._read_event)
                continue
            except SSL.SysCallError as exc:
                raise OSError(exc.args[0] if exc.args and exc.args[0] != -1 else errno.EPIPE,
                              _syscall_reason(exc)) from None
            except SSL.Error as exc:
                raise self._failed(ssl_error_reason(exc), handshake=False) from None
            view = view[sent:]

    send = sendall

    def _wait(self, watcher: Any) -> None:
        if not watcher.active:
            self._sock._wait(watcher)  # raises the socket timeout after sock.timeout
            return
        # The other greenlet (reader or writer) is parked on this watcher: poll instead.
        timeout = self._sock.timeout
        if timeout is not None and timeout <= 0:
            raise TimeoutError("timed out")
        gevent.sleep(_POLL)

    def _check_open(self) -> None:
        # After close() the fd number may already belong to another connection: never touch it.
        if self._closed:
            raise OSError(errno.EBADF, "TLS socket is closed")

    # ---- socket plumbing -------------------------------------------------------------------
    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def fileno(self) -> int:
        return self._sock.fileno()

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        """Send close_notify if it can go out at once, then close the socket. Idempotent."""
        if self._closed:
            return
        if self._established:
            try:
                self._conn.shutdown()  # one non-blocking attempt; never waits for the peer
            except (SSL.Error, OSError):
                pass
        self._closed = True
        self._sock.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("established" if self._established else "handshaking")
        return f"<TLSSocket {state} peer={_peer_text(self.peer)}>"


def wrap_server_socket(sock: Any, context: SSL.Context, peer: tuple | None = None, port_alias: str = "") -> TLSSocket:
    """The acceptor's hook: wrap an accepted gevent socket (no I/O happens here)."""
    return TLSSocket(sock, context, peer, port_alias)


# ---- the session's transport -----------------------------------------------------------------

_RECORD = 16384  # the largest TLS record's plaintext


class TLSTransport:
    """The non-blocking transport (``wsserver.runtime.transport.Transport``) of an established
    TLS connection: the session reads it in hub callbacks, so nothing here waits.

    ``recv`` reads whole records while they are complete in the socket (up to ``size``), so a
    burst costs one callback, and never leaves decrypted bytes inside OpenSSL (each read asks
    for at least a record's worth): what is left stays in the kernel, where the session's read
    watcher sees it. ``send`` after WantWrite is retried by the session with the same bytes,
    which is what SSL_write requires.
    """

    __slots__ = ("_closed", "_conn", "_fd", "_sock", "tls")

    def __init__(self, tls: TLSSocket) -> None:
        import _socket

        self.tls = tls  # kept for its facts (peer_certificate, version, cipher)
        self._conn = tls._conn
        # Take the fd from the gevent socket: from now on only this object closes it.
        fd = tls._sock.detach()
        self._sock = _socket.socket(fileno=fd)
        self._sock.setblocking(False)
        self._fd = fd
        self._closed = False

    def fileno(self) -> int:
        return self._fd

    def recv(self, size: int) -> bytes:
        if self._closed:
            raise OSError(errno.EBADF, "TLS transport is closed")
        conn = self._conn
        try:
            data = conn.recv(size)
        except SSL.WantReadError:
            raise WantRead from None
        except SSL.WantWriteError:
            raise WantWrite from None
        except SSL.ZeroReturnError:
            return b""
        except SSL.SysCallError as exc:
            if exc.args and exc.args[0] in (-1, errno.ECONNRESET, errno.EPIPE):
                return b""
            raise OSError(exc.args[0], _syscall_reason(exc)) from None
        except SSL.Error as exc:
            raise TLSError(ssl_error_reason(exc), False) from None
        total = len(data)
        if total + _RECORD > size:
            return data
        chunks = [data]
        while total + _RECORD <= size:
            try:
                more = conn.recv(size - total)
            except SSL.Error:
                break  # WantRead (the usual end), or a problem the next call reports
            chunks.append(more)
            total += len(more)
        return b"".join(chunks) if len(chunks) > 1 else data

    def send(self, data: bytes | memoryview) -> int:
        if self._closed:
            raise OSError(errno.EBADF, "TLS transport is closed")
        try:
            return self._conn.send(data)
        except SSL.WantWriteError:
            raise WantWrite from None
        except SSL.WantReadError:
            raise WantRead from None
        except SSL.SysCallError as exc:
            code = exc.args[0] if exc.args and exc.args[0] != -1 else errno.EPIPE
            raise OSError(code, _syscall_reason(exc)) from None
        except SSL.Error as exc:
            raise TLSError(ssl_error_reason(exc), False) from None

    def close(self) -> None:
        """close_notify if the socket takes it at once, then close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.shutdown()
        except (SSL.Error, OSError):
            pass
        try:
            self._sock.close()
        except OSError:
            pass
        self.tls._closed = True  # the TLSSocket must never touch the fd number again

    def peer_certificate(self) -> x509.Certificate | None:
        return self.tls.peer_certificate()


def make_transport(sock: Any) -> Any:
    """The session transport for an accepted connection: TLS or plain (the dispatcher's hook)."""
    if isinstance(sock, TLSSocket):
        return TLSTransport(sock)
    return PlainTransport(sock)


def _syscall_reason(exc: SSL.SysCallError) -> str:
    if exc.args and exc.args[0] == -1:
        return "connection closed during the TLS exchange"
    return str(exc.args[1]) if len(exc.args) > 1 else str(exc)


def _peer_text(peer: tuple | None) -> str:
    if not peer:
        return "?"
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
