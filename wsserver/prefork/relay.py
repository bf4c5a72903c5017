"""The master <-> worker channel: one Unix socketpair per worker, length-prefixed frames.

A frame is ``!IB`` (body length, kind) followed by the body. The same frames flow both ways:

========  =================  =========================================================
kind      direction          body
========  =================  =========================================================
READY     worker -> master   empty: the worker accepts connections
PUBLISH   worker -> master   ``!HB`` group length, 1 = text / 0 = binary, group, message
          master -> worker   the same bytes, forwarded to every other worker
DRAIN     master -> worker   ``!d`` graceful timeout: stop accepting, let sessions finish;
                             then optionally the aliases (``\n``-separated) of ports the
                             new generation no longer serves: their sessions get 1001 now
REQUEST   admin -> master    a JSON object ``{"id": n, "op": ...}`` (see admin/supervisor.py)
          master -> worker   the same, for the worker's part (sessions, closing one)
REPLY     master -> admin    a JSON object ``{"id": n, ...}``: the answer to a request
          worker -> master   the same, forwarded unchanged to the admin process
BROKER    worker -> master   one byte, 1 = connected to the ``[cluster]`` broker, 0 = not
                             (sent at each change; ``/readyz`` reads it)
========  =================  =========================================================

Ordering: a worker writes its publishes to one stream socket in order, the master appends
each to every other worker's outgoing buffer in the order it read them, and each worker
reads its socket in order, so every subscriber sees one publisher's messages in the order
they were published.

This module is plain stdlib (no gevent): the master uses :class:`Channel` with a selector;
the worker wraps its end in a gevent socket and uses :class:`FrameReader` and the encoders.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator

HEADER = struct.Struct("!IB")
PUBLISH_HEAD = struct.Struct("!HB")
DRAIN_BODY = struct.Struct("!d")

READY = 1
PUBLISH = 2
DRAIN = 3
REQUEST = 4
REPLY = 5
BROKER = 6
KINDS = (READY, PUBLISH, DRAIN, REQUEST, REPLY, BROKER)

# A broadcast message is at most a port's max_message_size (< 2 GiB); anything larger is a bug.
MAX_BODY = 2**31 + 65536 + PUBLISH_HEAD.size
RECV_SIZE = 256 * 1024
# The master stops reading publishers while a worker has this much waiting for it: the
# publishers' sends then block (their greenlets only), which is backpressure, not loss.
HIGH_WATER = 8 * 1024 * 1024


class RelayError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def frame(kind: int, body: bytes = b"") -> bytes:
    return HEADER.pack(len(body), kind) + body


def encode_publish(group: str, message: str | bytes) -> bytes:
    name = group.encode()
    if isinstance(message, str):
        payload, is_text = message.encode(), 1
    else:
        payload, is_text = bytes(message), 0
    return frame(PUBLISH, PUBLISH_HEAD.pack(len(name), is_text) + name + payload)


def decode_publish(body: bytes) -> tuple[str, str | bytes]:
    name_len, is_text = PUBLISH_HEAD.unpack_from(body)
    start = PUBLISH_HEAD.size
    group = body[start : start + name_len].decode()
    payload = body[start + name_len :]
    return group, (payload.decode() if is_text else bytes(payload))


def encode_drain(timeout: float, closing: tuple[str, ...] | list[str] = ()) -> bytes:
    return frame(DRAIN, DRAIN_BODY.pack(timeout) + "\n".join(closing).encode())


def decode_drain(body: bytes) -> float:
    return DRAIN_BODY.unpack_from(body)[0]


def decode_drain_closing(body: bytes) -> tuple[str, ...]:
    """The aliases of the ports whose sessions a draining worker closes at once."""
    rest = body[DRAIN_BODY.size :]
    return tuple(rest.decode().split("\n")) if rest else ()


def encode_broker(up: bool) -> bytes:
    return frame(BROKER, b"\x01" if up else b"\x00")


def encode_json(kind: int, message: dict) -> bytes:
    return frame(kind, json.dumps(message, separators=(",", ":")).encode())


def decode_json(body: bytes) -> dict:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise RelayError(f"bad relay message: {exc}") from None
    if not isinstance(message, dict):
        raise RelayError("bad relay message: not a JSON object")
    return message


class FrameReader:
    """Incremental parser: feed bytes, iterate complete ``(kind, body, raw)`` frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
        self._buf += data
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER.size:
            length, kind = HEADER.unpack_from(buf, pos)
            if length > MAX_BODY or kind not in KINDS:
                raise RelayError(f"bad relay frame: kind={kind} length={length}")
            end = pos + HEADER.size + length
            if len(buf) < end:
                break
            raw = bytes(buf[pos:end])
            yield kind, raw[HEADER.size :], raw
            pos = end
        del buf[:pos]


class Channel:
    """The master's end of one worker's socketpair: non-blocking, with an outgoing buffer."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.reader = FrameReader()
        self.outbuf = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        """Queue ``data``; :meth:`flush` writes it when the socket is writable."""
        if not self.closed:
            self.outbuf += data
            self.flush()

    def flush(self) -> None:
        while self.outbuf and not self.closed:
            try:
                sent = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()  # the worker is gone: the reaper will tell why
                return
            del self.outbuf[:sent]

    def receive(self) -> list[tuple[int, bytes, bytes]]:
        """Frames that are readable now; an empty list also when the worker closed its end."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.close()
            return []
        return list(self.reader.feed(data))

    @property
    def congested(self) -> bool:
        return len(self.outbuf) > HIGH_WATER

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbuf.clear()
            try:
                self.sock.close()
            except OSError:
                pass


def socketpair() -> tuple[socket.socket, socket.socket]:
    """(master end, worker end)."""
    master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return master_end, worker_end
