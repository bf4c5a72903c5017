"""The picows client: echo scenarios (request/response, windowed streaming, large binary) and handshakes."""

from __future__ import annotations

import asyncio
import ssl
from time import perf_counter

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.loadgen.common import Run, emit, masked_frame, schedule_window, wait_go

CLOSE = WSMsgType.CLOSE
DATA_TYPES = frozenset((WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION))


class EchoListener(WSListener):
    """Keeps ``window`` messages in flight; with window 1 it also times each round trip.

    Replies are batched: every echo owes one new message, and the owed messages go out as one write of
    pre-built masked frames when picows has no further complete frame in its buffer (``last_in_buffer``).
    """

    def __init__(self, run: Run, frame: bytes, window: int) -> None:
        super().__init__()
        self.run = run
        self.frame = frame
        self.window = window
        self.track = window == 1
        self.transport: WSTransport | None = None
        self.write = None
        self.sent_at = 0.0
        self.inflight = 0
        self.owed = 0
        self.idle = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.write = transport.underlying_transport.write

    def start(self) -> None:
        self.sent_at = perf_counter()
        self.write(self.frame * self.window)
        self.inflight = self.window

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type not in DATA_TYPES:
            if msg_type == CLOSE:
                transport.disconnect()
            return
        if frame.fin:
            run = self.run
            if run.measuring:
                run.count += 1
                if self.track:
                    run.latencies.append(perf_counter() - self.sent_at)
            if run.sending:
                self.owed += 1
            else:
                self.inflight -= 1
                if self.inflight <= 0 and not self.idle.done():
                    self.idle.set_result(None)
        if self.owed and frame.last_in_buffer:
            if self.track:
                self.sent_at = perf_counter()
            self.write(self.frame * self.owed if self.owed > 1 else self.frame)
            self.owed = 0

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.idle.done():
            self.idle.set_result(None)


class HandshakeListener(WSListener):
    def __init__(self) -> None:
        super().__init__()
        self.echoed = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == CLOSE:
            transport.disconnect()
        elif msg_type in DATA_TYPES and frame.fin and not self.echoed.done():
            self.echoed.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.echoed.done():
            self.echoed.set_exception(ConnectionError("disconnected before the echo"))


def _connect_kwargs(url: str, local_addr: str, insecure: bool) -> dict:
    kwargs: dict = {"max_frame_size": 64 * 1024 * 1024}
    if local_addr:
        kwargs["local_addr"] = (local_addr, 0)
    if url.startswith("wss:"):
        ctx = ssl.create_default_context()
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        kwargs["ssl_context"] = ctx
    return kwargs


async def run_echo(args, run: Run) -> None:
    payload = (b"b" if args.binary else b"t") * args.size
    frame = masked_frame(2 if args.binary else 1, payload)
    kwargs = _connect_kwargs(args.url, args.local_addr, args.insecure)
    limit = asyncio.Semaphore(64)

    async def connect_one() -> EchoListener | None:
        async with limit:
            try:
                _, listener = await asyncio.wait_for(
                    ws_connect(lambda: EchoListener(run, frame, args.window), args.url, **kwargs),
                    args.timeout,
                )
                return listener
            except Exception:
                run.errors += 1
                return None

    listeners = [x for x in await asyncio.gather(*(connect_one() for _ in range(args.conns))) if x]
    emit({"event": "ready", "ok": len(listeners), "errors": run.errors})
    t0 = await wait_go()
    loop = asyncio.get_running_loop()
    loop.call_at(t0, lambda: [x.start() for x in listeners])
    await schedule_window(run, t0, args.warmup, args.duration)
    done = [x.idle for x in listeners]
    if done:
        await asyncio.wait(done, timeout=3.0)
    emit(run.result(connections=len(listeners)))
    for x in listeners:
        x.transport.send_close(WSCloseCode.OK)
    closing = [asyncio.ensure_future(x.transport.wait_disconnected()) for x in listeners]
    if closing:
        await asyncio.wait(closing, timeout=2.0)
    for x in listeners:
        x.transport.disconnect()


async def run_handshakes(args, run: Run) -> None:
    msg_type = WSMsgType.BINARY if args.binary else WSMsgType.TEXT
    payload = (b"b" if args.binary else b"t") * args.size
    kwargs = _connect_kwargs(args.url, args.local_addr, args.insecure)
    kwargs["websocket_handshake_timeout"] = args.timeout

    async def one() -> None:
        transport, listener = await ws_connect(HandshakeListener, args.url, **kwargs)
        try:
            transport.send(msg_type, payload)
            await asyncio.wait_for(listener.echoed, args.timeout)
            transport.send_close(WSCloseCode.OK)
            await asyncio.wait_for(transport.wait_disconnected(), args.timeout)
        finally:
            transport.disconnect()

    async def loop_forever() -> None:
        while run.sending:
            started = perf_counter()
            try:
                await asyncio.wait_for(one(), 3 * args.timeout)
            except Exception:
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
    await asyncio.sleep(max(0.0, t0 - asyncio.get_running_loop().time()) + 0.0001)
    loops = [asyncio.ensure_future(loop_forever()) for _ in range(args.conns)]
    await window
    await asyncio.wait(loops, timeout=3 * args.timeout + 1)
    for task in loops:
        task.cancel()
    emit(run.result(connections=args.conns))
