"""The session's write path on real sockets: gathered writes, broadcast encoded once, thread mode.

Each test runs real ``Session`` objects (the worker's code after the 101) on socket pairs in
this process, with a client side that speaks raw WebSocket frames (wsproto's client engine).
"""

from __future__ import annotations

import socket
import time

import gevent
import pytest
from gevent import socket as gsocket
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode

from wsserver.config import PoolConfig, PortConfig
from wsserver.endpoints.base import Endpoint
from wsserver.endpoints.echo import Echo
from wsserver.protocol import Handshake, WebSocketProtocol
from wsserver.runtime.pool import ExecutorPool, Scheduler
from wsserver.runtime.session import Session
from wsserver.runtime.transport import PlainTransport

pytestmark = pytest.mark.integration


class CountingTransport(PlainTransport):
    __slots__ = ("sends",)

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.sends = 0

    def send(self, data):
        self.sends += 1
        return super().send(data)


class Client:
    """The peer: masked frames out, frames in (through wsproto's client engine)."""

    def __init__(self, sock: socket.socket, deflate: bool = False) -> None:
        self.sock = gsocket.socket(fileno=sock.detach())
        self.ext = PerMessageDeflate() if deflate else None
        if self.ext is not None:
            self.ext.finalize("permessage-deflate")
        self.fp = FrameProtocol(client=True, extensions=[self.ext] if self.ext else [])
        self.frames: list = []

    def frame(self, message: str | bytes) -> bytes:
        return bytes(self.fp.send_data(message))

    def receive(self, count: int, timeout: float = 5.0) -> list:
        """The next ``count`` data messages (text as str), or closes as ("close", code)."""
        deadline = time.monotonic() + timeout
        out: list = []
        parts: list = []
        while len(out) < count:
            for f in self.fp.received_frames():
                if f.opcode is Opcode.CLOSE:
                    out.append(("close", f.payload[0]))
                elif f.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
                    parts.append(f.payload)
                    if f.message_finished:
                        out.append("".join(parts) if isinstance(parts[0], str) else b"".join(parts))
                        parts = []
            if len(out) >= count:
                break
            with gevent.Timeout(max(0.01, deadline - time.monotonic())):
                data = self.sock.recv(1 << 20)
            if not data:
                break
            self.fp.receive_bytes(data)
        return out


def _protocol(deflate: bool) -> WebSocketProtocol:
    hs = Handshake()
    offer = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
    hs.receive_data(
        b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + offer + b"\r\n"
    )
    _, proto = hs.accept(hs.next_request(), compression=deflate)
    assert proto.compression is deflate
    return proto


@pytest.fixture
def make(groups):
    scheduler = Scheduler()
    made: list[Session] = []

    def make(endpoint: Endpoint, *, mode: str = "greenlet", deflate: bool = False, counting: bool = False):
        port = PortConfig(alias="t", port=1, pool=PoolConfig(mode=mode, min=1, max=4))
        pool = (
            ExecutorPool(f"t{len(made)}", port.pool, scheduler)
            if not made or mode == "thread"
            else made[0]._pool
        )
        a, b = socket.socketpair()
        transport = CountingTransport(a) if counting else PlainTransport(a)
        session = Session(
            transport, ("127.0.0.1", 1), port, "/x", endpoint, _protocol(deflate), pool, groups=groups
        )  # the sessions of one test share a worker's groups
        session.start()
        made.append(session)
        return session, transport, Client(b, deflate)

    yield make
    for session in made:
        session.abort()
    scheduler.stop()


def test_a_read_of_pipelined_messages_is_answered_in_one_write(make):
    _session, transport, client = make(Echo(), counting=True)
    gevent.sleep(0.01)
    before = transport.sends
    client.sock.sendall(b"".join(client.frame(f"m{i}") for i in range(50)))
    assert client.receive(50) == [f"m{i}" for i in range(50)]
    assert transport.sends - before == 1


class SendBlockSend(Endpoint):
    def on_text(self, session, text):
        session.send("before")
        gevent.sleep(0.5)
        session.send("after")


def test_what_was_sent_before_a_handler_blocks_leaves_at_once(make):
    _session, _, client = make(SendBlockSend())
    client.sock.sendall(client.frame("go"))
    started = time.monotonic()
    assert client.receive(1) == ["before"]
    assert time.monotonic() - started < 0.3
    assert client.receive(1) == ["after"]


class Room(Endpoint):
    def on_connect(self, session):
        session.join("room")

    def on_text(self, session, text):
        session.broadcast(text, "room")


def test_broadcast_reaches_plain_and_compressing_members(make):
    members = [make(Room(), deflate=d) for d in (False, True, False, True)]
    gevent.sleep(0.05)
    sender = members[0][2]
    sender.sock.sendall(sender.frame("hello, room") + sender.frame("é" * 3000))
    for _, _, client in members:
        assert client.receive(2) == ["hello, room", "é" * 3000]
    # The compressing members got compressed frames, the others the one shared encoding.
    assert members[1][2].ext is not None


class ThreadBurst(Endpoint):
    def on_text(self, session, text):
        for i in range(3):
            session.send(f"{text}-{i}")
        if text == "last":
            session.close(1000, "done")


def test_thread_mode_sends_and_close_keep_their_order(make):
    _session, _, client = make(ThreadBurst(), mode="thread")
    client.sock.sendall(client.frame("a") + client.frame("last"))
    got = client.receive(7)
    assert got == ["a-0", "a-1", "a-2", "last-0", "last-1", "last-2", ("close", 1000)]


def test_a_large_message_is_written_without_waiting_for_the_turn(make):
    _session, _transport, client = make(Echo(), counting=True)
    payload = bytes(range(256)) * 1024  # 256 KiB: several reads, one PartialFrame
    client.sock.sendall(client.frame(payload))
    assert client.receive(1) == [payload]


class CloseOnFirst(Endpoint):
    def __init__(self) -> None:
        self.after_close = 0

    def on_text(self, session, text):
        if session.closed:
            self.after_close += 1
        session.close(1000, "enough")


def test_a_closing_session_stops_taking_input(make):
    """After our close frame, data is no longer delivered, and a peer that keeps streaming
    instead of answering the close is cut off well before close_timeout."""
    endpoint = CloseOnFirst()
    _session, _, client = make(endpoint)
    client.sock.sendall(client.frame("first"))
    assert client.receive(1) == [("close", 1000)]
    burst = client.frame("x" * 60_000)
    started = time.monotonic()
    sent = 0
    try:
        while sent < 8 << 20 and time.monotonic() - started < 10:
            client.sock.sendall(burst)
            sent += len(burst)
    except OSError:
        pass  # the server dropped the connection
    assert sent < 8 << 20 and time.monotonic() - started < 5
    assert endpoint.after_close == 0
