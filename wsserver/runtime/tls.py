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

Why :class:`TLSTransport` calls pyOpenSSL's private cffi bindings (``OpenSSL._util.lib``/``ffi``):
``Connection.recv`` allocates a fresh cffi buffer of the requested size on every call (64 KiB
for the session's reads) and every ``WantRead`` -- the normal end of each read burst -- is an
exception built by ``_raise_ssl_error``. For small WebSocket messages that Python overhead
outweighed the crypto. The transport therefore calls ``SSL_read``/``SSL_write`` on the
connection's own ``SSL*`` (``Connection._ssl``), reads into one preallocated per-process buffer,
ends a burst on ``SSL_get_error() == SSL_ERROR_WANT_READ`` without an exception, and passes every
other result <= 0 to ``Connection._raise_ssl_error``, so errors map exactly as pyOpenSSL maps them.
Those are private names: ``tests/unit/test_runtime_tls.py::test_pyopenssl_private_bindings``
fails loudly if a pyOpenSSL or cryptography upgrade changes them (``bench/tls_transport_micro.py``
measures the gain).
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
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from wsserver.logs import log
from wsserver.protocol.address import format_peer
from wsserver.runtime.transport import PlainTransport, WantRead, WantWrite

logger = logging.getLogger("wsserver.tls")

_POLL = 0.002  # seconds between retries when the other direction's watcher is busy
_PLAIN_BODY = b"This port speaks TLS: use wss:// (or https://).\n"
_PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_PLAIN_BODY)).encode() + b"\r\n\r\n" + _PLAIN_BODY
)


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

    __slots__ = (
        "_closed",
        "_conn",
        "_established",
        "_port_alias",
        "_read_event",
        "_sock",
        "_write_event",
        "handshake_seconds",
        "peer",
    )

    def __init__(
        self, sock: Any, context: SSL.Context, peer: tuple | None = None, port_alias: str = ""
    ) -> None:
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
                    log(
                        logger,
                        "debug",
                        "tls handshake: connection closed",
                        port=self._port_alias,
                        peer=format_peer(self.peer),
                    )
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
            log(
                logger,
                "info",
                "tls handshake failed",
                port=self._port_alias,
                peer=format_peer(self.peer),
                reason=reason,
            )
        return TLSError(reason, handshake)

    def recv_plain(self, bufsize: int, flags: int = 0) -> bytes:
        """Bytes that precede the TLS handshake (a PROXY protocol header), read from the TCP
        socket itself; ``socket.MSG_PEEK`` leaves them for the handshake."""
        if self._established:
            raise TLSError("plain bytes after the TLS handshake", False)
        return self._sock.recv(bufsize, flags)

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
                raise OSError(
                    exc.args[0] if exc.args and exc.args[0] != -1 else errno.EPIPE, _syscall_reason(exc)
                ) from None
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
        return f"<TLSSocket {state} peer={format_peer(self.peer)}>"


def wrap_server_socket(
    sock: Any, context: SSL.Context, peer: tuple | None = None, port_alias: str = ""
) -> TLSSocket:
    """The acceptor's hook: wrap an accepted gevent socket (no I/O happens here)."""
    return TLSSocket(sock, context, peer, port_alias)


# ---- the session's transport -----------------------------------------------------------------

_RECORD = 16384  # the largest TLS record's plaintext
_RBUF_LEN = 1 << 20  # the session's MAX_RECV_SIZE (reads while a large frame arrives); a larger
# request reads at most this much, which a recv may always do
# One read buffer per worker process: transports read only in the hub's callbacks (one thread),
# and recv copies the bytes out before it returns, so the buffer is never in use twice.
_RBUF = _ffi.new("char[]", _RBUF_LEN)
_SSL_read = _lib.SSL_read
_SSL_write = _lib.SSL_write
_SSL_get_error = _lib.SSL_get_error
_SSL_ERROR_WANT_READ = _lib.SSL_ERROR_WANT_READ
_ffi_unpack = _ffi.unpack
_ffi_from_buffer = _ffi.from_buffer


class TLSTransport:
    """The non-blocking transport (``wsserver.runtime.transport.Transport``) of an established
    TLS connection: the session reads it in hub callbacks, so nothing here waits.

    ``recv`` reads one record, and after a full-size one (16 KiB of plaintext: part of a large
    message) the next ones while they are complete in the socket (up to ``size``), so a large
    message costs one callback per ``size`` bytes while a small one costs no extra ``read()`` that
    would fail with EAGAIN; it never leaves decrypted bytes inside OpenSSL (each read asks for
    at least a record's worth, and without read-ahead OpenSSL reads just the record it
    decrypts): what is left stays in the kernel, where the session's read watcher sees it.
    ``send`` after WantWrite is retried by the session with the same bytes, which is what
    SSL_write requires (pyOpenSSL sets ACCEPT_MOVING_WRITE_BUFFER, so a new memoryview of them
    is fine).

    The hot path calls ``SSL_read``/``SSL_write`` through pyOpenSSL's own cffi bindings (see the
    module doc) and only hands a result <= 0 to pyOpenSSL's error mapping.
    """

    __slots__ = ("_closed", "_conn", "_fd", "_sock", "_ssl", "tls")

    def __init__(self, tls: TLSSocket) -> None:
        import _socket

        self.tls = tls  # kept for its facts (peer_certificate, version, cipher)
        self._conn = tls._conn
        self._ssl = self._conn._ssl  # the SSL*; kept alive by self._conn
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
        ssl = self._ssl
        if size > _RBUF_LEN:
            size = _RBUF_LEN
        n = _SSL_read(ssl, _RBUF, size)
        if n <= 0:
            return self._read_failed(n)
        total = n
        # Only a full record (the middle of a large message, or a bulk transfer) suggests more
        # is already here; after a short one, the usual end of what the peer wrote at once, one
        # more SSL_read would mostly cost a read() that fails with EAGAIN.
        while n >= _RECORD and total + _RECORD <= size:
            n = _SSL_read(ssl, _RBUF + total, size - total)
            if n <= 0:
                # WantRead is the usual end of a burst: no exception for it. Anything else goes
                # through pyOpenSSL (which takes it off OpenSSL's error queue); the next call
                # reports it, as OpenSSL keeps a connection's failed or closed state.
                if _SSL_get_error(ssl, n) != _SSL_ERROR_WANT_READ:
                    try:
                        self._conn._raise_ssl_error(ssl, n)
                    except SSL.Error:
                        pass
                break
            total += n
        return _ffi_unpack(_RBUF, total)

    def _read_failed(self, result: int) -> bytes:
        # WantRead without building pyOpenSSL's exception: a record that is still arriving, or
        # a post-handshake message (key update) with nothing behind it. (pyOpenSSL would first
        # re-raise exceptions from its Python callbacks; those run only during the handshake,
        # and do_handshake has raised them already.)
        if _SSL_get_error(self._ssl, result) == _SSL_ERROR_WANT_READ:
            raise WantRead
        try:
            self._conn._raise_ssl_error(self._ssl, result)
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
        return b""  # SSL_read gave 0 and OpenSSL reported no error: treat as the end, as pyOpenSSL did

    def send(self, data: bytes | memoryview) -> int:
        if self._closed:
            raise OSError(errno.EBADF, "TLS transport is closed")
        n = _SSL_write(self._ssl, data if type(data) is bytes else _ffi_from_buffer(data), len(data))
        if n > 0:
            return n
        try:
            self._conn._raise_ssl_error(self._ssl, n)
        except SSL.WantWriteError:
            raise WantWrite from None
        except SSL.WantReadError:
            raise WantRead from None
        except SSL.SysCallError as exc:
            code = exc.args[0] if exc.args and exc.args[0] != -1 else errno.EPIPE
            raise OSError(code, _syscall_reason(exc)) from None
        except SSL.Error as exc:
            raise TLSError(ssl_error_reason(exc), False) from None
        return n

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
