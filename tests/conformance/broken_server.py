"""A deliberately broken WebSocket echo server, to prove that the runner can fail a server.

It completes the opening handshake, unmasks and reassembles messages, answers pings and closes
cleanly, but it never validates UTF-8: invalid text is echoed back instead of failing the
connection with 1007.  The Autobahn 6.* cases with invalid payloads must therefore come out FAILED,
the valid ones OK.  asyncio, loopback only, in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import threading

MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n <= 125:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def _unmask(mask: bytes, data: bytes) -> bytes:
    if not data:
        return data
    key = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(len(data), "little")


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        key = b""
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + MAGIC).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Server: broken-echo\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        parts: list[bytes] = []
        message_opcode = 0
        while True:
            b0, b1 = await reader.readexactly(2)
            fin, rsv, opcode, length = b0 & 0x80, b0 & 0x70, b0 & 0x0F, b1 & 0x7F
            if length == 126:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await reader.readexactly(8))[0]
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            payload = _unmask(mask, await reader.readexactly(length))
            if rsv or opcode in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
                writer.write(_frame(8, struct.pack("!H", 1002)))
                break
            if opcode == 8:
                writer.write(_frame(8, payload[:2] if len(payload) >= 2 else b""))
                break
            if opcode == 9:
                writer.write(_frame(10, payload))
                continue
            if opcode == 10:
                continue
            if opcode in (1, 2):
                message_opcode, parts = opcode, []
            parts.append(payload)
            if fin:
                # the defect: a text message goes back as it came, valid UTF-8 or not
                writer.write(_frame(message_opcode, b"".join(parts)))
                parts = []
            await writer.drain()
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


class BrokenEchoServer:
    """``with BrokenEchoServer() as srv: srv.url`` — runs in a daemon thread, stops on exit."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broken-echo", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/echo"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def start() -> None:
            self._server = await asyncio.start_server(_handle, self.host, 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        loop.run_until_complete(start())
        loop.run_forever()
        self._server.close()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(self._server.wait_closed())
        loop.close()

    def __enter__(self) -> BrokenEchoServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("broken echo server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
