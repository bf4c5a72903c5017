"""A raw asyncio WebSocket client for the idle-connection and reconnect-storm scenarios.

Each connection sends an upgrade request (optionally offering permessage-deflate, which picows cannot),
expects ``101``, sends one masked 32-byte text frame, reads one frame back, and is then held open. The
echo makes the server allocate whatever a live session costs (e.g. the deflate contexts).
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time
from urllib.parse import urlsplit

from bench.loadgen.common import Run, emit, read_command, schedule_window, wait_go

MASK = b"\x11\x22\x33\x44"


def _text_frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + MASK + masked


CLOSE_FRAME = bytes((0x88, 0x82)) + MASK + bytes(b ^ MASK[i] for i, b in enumerate(b"\x03\xe8"))


class RawConnection(asyncio.Protocol):
    def __init__(self, request: bytes, frame: bytes, done: asyncio.Future) -> None:
        self.request = request
        self.frame = frame
        self.done = done
        self.buf = bytearray()
        self.state = 0  # 0 = waiting for 101, 1 = waiting for the echo, 2 = idle
        self.deflate = False
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future | None = None  # set by close_handshake(): the server's close or EOF

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.state == 2:
            if self.closed is not None and not self.closed.done() and (data[0] & 0x0F) == 0x8:
                self.closed.set_result(None)
            return
        self.buf += data
        if self.state == 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            if not head.startswith(b"http/1.1 101"):
                self._fail(ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1")))
                return
            self.deflate = b"permessage-deflate" in head
            del self.buf[: end + 4]
            self.state = 1
            self.transport.write(self.frame)
        if self.state == 1 and len(self.buf) >= 2:
            length = self.buf[1] & 0x7F
            header = 2
            if length == 126:
                header = 4
                length = int.from_bytes(self.buf[2:4], "big") if len(self.buf) >= 4 else 1 << 30
            elif length == 127:
                header = 10
                length = int.from_bytes(self.buf[2:10], "big") if len(self.buf) >= 10 else 1 << 30
            if len(self.buf) >= header + length:
                self.state = 2
                self.buf = bytearray()
                if not self.done.done():
                    self.done.set_result(time.monotonic())

    def connection_lost(self, exc) -> None:
        self._fail(exc or ConnectionError("closed by the server"))
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    async def close_handshake(self, timeout: float) -> None:
        """Send a close frame, wait for the server's close frame (or EOF), then close the socket."""
        self.closed = asyncio.get_running_loop().create_future()
        self.transport.write(CLOSE_FRAME)
        try:
            await asyncio.wait_for(self.closed, timeout)
        finally:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self.state == 2:
                self.transport.write(CLOSE_FRAME)
            self.transport.close()


def _request(url: str, deflate: bool) -> bytes:
    parts = urlsplit(url)
    host = parts.netloc
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {parts.path or '/'} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _ssl_context(args) -> ssl.SSLContext | None:
    if urlsplit(args.url).scheme != "wss":
        return None
    ctx = ssl.create_default_context()
    if args.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _open(args, loop, conns: list[RawConnection], ctx: ssl.SSLContext | None = None) -> float:
    """Open one connection through handshake and echo; returns the monotonic time it was served."""
    parts = urlsplit(args.url)
    if ctx is None:
        ctx = _ssl_context(args)
    done = loop.create_future()
    conn = RawConnection(_request(args.url, args.compression), _text_frame(b"i" * 32), done)
    conns.append(conn)
    kwargs = {"local_addr": (args.local_addr, 0)} if args.local_addr else {}
    await loop.create_connection(
        lambda: conn,
        parts.hostname,
        parts.port or (443 if ctx else 80),
        ssl=ctx,
        server_hostname="localhost" if ctx else None,
        **kwargs,
    )
    return await done


async def run_idle(args, run: Run) -> None:
    loop = asyncio.get_running_loop()
    conns: list[RawConnection] = []
    limit = asyncio.Semaphore(200)

    async def one() -> bool:
        async with limit:
            try:
                await asyncio.wait_for(_open(args, loop, conns), args.timeout)
                return True
            except Exception:
                run.errors += 1
                return False

    ok = sum(await asyncio.gather(*(one() for _ in range(args.conns))))
    negotiated = sum(1 for c in conns if c.state == 2 and c.deflate)
    emit({"event": "ready", "ok": ok, "errors": run.errors, "deflate_negotiated": negotiated})
    await read_command(args.hold)
    for conn in conns:
        conn.close()
    await asyncio.sleep(0.2)
    emit(
        {
            "event": "result",
            "count": ok,
            "errors": run.errors,
            "deflate_negotiated": negotiated,
            "elapsed": 0.0,
            "bytes": 0,
            "cpu_seconds": 0.0,
            "latency_hist": {},
        }
    )


async def run_storm(args, run: Run) -> None:
    loop = asyncio.get_running_loop()
    conns: list[RawConnection] = []
    emit({"event": "ready", "ok": 0, "errors": 0})
    t0 = await wait_go()
    await asyncio.sleep(max(0.0, t0 - loop.time()))
    started = time.monotonic()
    run.start_window()

    async def one() -> float | None:
        try:
            return await asyncio.wait_for(_open(args, loop, conns), args.timeout) - started
        except Exception:
            return None

    served = await asyncio.gather(*(one() for _ in range(args.conns)))
    run.end_window()
    times = [t for t in served if t is not None]
    run.errors = len(served) - len(times)
    run.count = len(times)
    run.latencies.extend(times)
    result = run.result(connections=args.conns, time_to_all=max(times) if times else None)
    for conn in conns:
        conn.close()
    await asyncio.sleep(0.2)
    emit(result)


async def run_handshakes(args, run: Run) -> None:
    """connect + upgrade + one echo + close handshake, in ``conns`` concurrent loops."""
    from time import perf_counter

    loop = asyncio.get_running_loop()
    ctx = _ssl_context(args)

    async def one() -> None:
        conns: list[RawConnection] = []
        try:
            await _open(args, loop, conns, ctx)
            await conns[0].close_handshake(args.timeout)
        finally:
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.close()

    async def loop_forever() -> None:
        while run.sending:
            started = perf_counter()
            try:
                await asyncio.wait_for(one(), 3 * args.timeout)
            except Exception:  # counted
                if run.measuring:
                    run.errors += 1
                await asyncio.sleep(0.01)
                continue
            if run.measuring:
                run.count += 1
                run.latencies.append(perf_counter() - started)

    emit({"event": "ready", "ok": 0, "errors": 0})
    t0 = await wait_go()
    window = asyncio.ensure_future(schedule_window(run, t0, args.warmup, args.duration))
    await asyncio.sleep(max(0.0, t0 - loop.time()) + 0.0001)
    loops = [asyncio.ensure_future(loop_forever()) for _ in range(args.conns)]
    await window
    await asyncio.wait(loops, timeout=3 * args.timeout + 1)
    for task in loops:
        task.cancel()
    emit(run.result(connections=args.conns))
