"""Non-blocking byte transports for the session data path.

A session reads in hub callbacks (no greenlet parked per idle connection), so its transport
never blocks: ``recv``/``send`` either make progress or raise :class:`WantRead` /
:class:`WantWrite`, and the session waits for that readiness with a hub watcher. TLS
transports implement the same three methods.
"""

from __future__ import annotations

import socket
from typing import Protocol


class WantRead(Exception):
    """Nothing to do until the socket is readable."""


class WantWrite(Exception):
    """Nothing to do until the socket is writable."""


class Transport(Protocol):
    def fileno(self) -> int: ...

    def recv(self, size: int) -> bytes:
        """Bytes read, b"" at EOF; raises WantRead/WantWrite, or OSError when the connection broke."""

    def send(self, data: bytes | memoryview) -> int:
        """Bytes written (maybe fewer than given); raises WantWrite/WantRead or OSError."""

    def close(self) -> None: ...


_AGAIN = (BlockingIOError, InterruptedError)


class PlainTransport:
    """A TCP socket in non-blocking mode, used directly (no gevent wrapper on the hot path)."""

    __slots__ = ("_fd", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        # Detach from the gevent socket object so it cannot close the fd under us.
        fd = sock.detach()
        import _socket

        self._sock = _socket.socket(fileno=fd)
        self._sock.setblocking(False)
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def recv(self, size: int) -> bytes:
        try:
            return self._sock.recv(size)
        except _AGAIN:
            raise WantRead from None

    def send(self, data: bytes | memoryview) -> int:
        try:
            return self._sock.send(data)
        except _AGAIN:
            raise WantWrite from None

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
