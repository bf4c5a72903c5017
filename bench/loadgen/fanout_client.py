"""The fan-out load generator: N subscribers and one publisher on the PubSub endpoint, in one event loop.

    python -m bench.loadgen.fanout_client --urls ws://127.0.0.1:9001/pubsub,ws://127.0.0.1:9002/pubsub \\
        --subscribers 2000 --rate 20 --duration 10

Subscriber ``i`` connects to ``urls[i % len(urls)]`` and sends ``{"op":"subscribe","group":G}``; the
publisher connects to ``urls[0]`` and sends ``{"op":"publish","group":G,"data":"SEQ STAMP xxx…"}`` at a
fixed rate, where STAMP is ``time.monotonic_ns()`` when the frame was written. Every subscriber reads
STAMP back from its ``message`` and subtracts it from the same clock at the moment its data arrived in
the loop, so the latency includes what the generator itself takes to get to the connection (its CPU is
reported so that can be judged).

Talks to ``bench/fanout.py`` in JSON lines on stdout and commands on stdin, like the other loadgen
workers: ``joined`` (every subscriber answered ``subscribed``), ``ready`` (after the warm-up: every
subscriber has received a warm-up message, so every server's subscription to the group is live), then
``go <wall time>`` → the measured messages → ``drained`` (the instant all were delivered, or the drain
timeout) → ``result``; ``close`` or EOF closes the connections.

Raw sockets with a minimal framer, not a WebSocket library: at 10 000 subscribers x 20 messages/s the
client has 200 000 deliveries a second to take on one core, so each costs one ``data_received`` and a
few slices, with no per-message objects beyond the latency sample.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import time
from array import array
from urllib.parse import urlsplit

from bench.loadgen.common import emit, histogram, masked_frame, proc_cpu_seconds, read_command, wait_go

_now_ns = time.monotonic_ns
DATA_KEY = b'"data":"'
SUBSCRIBED = b'{"op":"subscribed"'
WARM = ord("w")
CLOSE_FRAME = masked_frame(0x8, b"\x03\xe8")


class Stats:
    """What every subscriber adds to; one instance per run (module state kept out of the hot path)."""

    def __init__(self, measured: int, subscribe: bytes) -> None:
        self.measured = measured
        self.subscribe = subscribe  # the subscribe frame, the same for every subscriber       # messages the publisher will send in the window
        self.delivered = 0  # measured messages received, over all subscribers
        self.warm_subs = 0  # subscribers that have received a warm-up message
        self.latencies = array("d")  # seconds, one per measured delivery
        self.last_ns = 0  # when the last measured delivery arrived
        self.disorder = 0  # deliveries whose sequence number was not above the previous one
        self.foreign = 0  # text frames that were neither a message nor subscribed (errors)
        self.lost_conns = 0  # subscriber connections that closed before we closed them
        self.closing = False


class Subscriber(asyncio.Protocol):
    __slots__ = ("buf", "count", "joined", "last", "request", "state", "stats", "transport", "warm")

    def __init__(self, request: bytes, stats: Stats, joined: asyncio.Future) -> None:
        self.request = request
        self.stats = stats
        self.joined = joined
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.state = 0  # 0 = waiting for 101, 1 = waiting for "subscribed", 2 = live
        self.count = 0  # measured messages received
        self.last = -1  # the last sequence number received
        self.warm = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = _now_ns()
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if self.state == 0:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self._fail(ConnectionError(data.split(b"\r\n", 1)[0].decode("latin-1")))
                return
            self.state = 1
            self.transport.write(self.stats.subscribe)
            data = data[end + 4 :]
        n = len(data)
        pos = 0
        while n - pos >= 2:
            length = data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > n:
                break
            first = data[pos]
            if first == 0x81:  # a complete text frame: every message and answer of PubSub
                self._text(data[pos + head : end], now)
            else:
                self._control(first & 0x0F, data[pos + head : end])
            pos = end
        if pos < n:
            self.buf = data[pos:]

    def _text(self, payload: bytes, now: int) -> None:
        i = payload.find(DATA_KEY)
        if i < 0 or self.state != 2:
            if self.state == 1 and payload.startswith(SUBSCRIBED):
                self.state = 2
                if not self.joined.done():
                    self.joined.set_result(None)
            else:
                self.stats.foreign += 1
            return
        i += 8
        if payload[i] == WARM:
            if not self.warm:
                self.warm = True
                self.stats.warm_subs += 1
            return
        seq, stamp, _ = payload[i : i + 48].split(b" ", 2)
        seq = int(seq)
        stats = self.stats
        if seq <= self.last:
            stats.disorder += 1
        self.last = seq
        self.count += 1
        stats.delivered += 1
        stats.last_ns = now
        stats.latencies.append((now - int(stamp)) * 1e-9)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:  # ping: answer, though the bench servers send none
            self.transport.write(masked_frame(0xA, payload))
        elif opcode == 0x8:
            self._fail(ConnectionError("close frame from the server"))
        elif opcode != 0xA:
            self.stats.foreign += 1  # fragmented or binary: PubSub sends neither here

    def _fail(self, exc: BaseException) -> None:
        if not self.joined.done():
            self.joined.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc) -> None:
        if self.state == 2 and not self.stats.closing:
            self.stats.lost_conns += 1
        if not self.joined.done():
            self.joined.set_exception(exc or ConnectionError("closed by the server"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(CLOSE_FRAME)
            self.transport.close()


class Publisher(asyncio.Protocol):
    """One connection that publishes and counts what comes back (only errors are expected)."""

    def __init__(self, request: bytes, ready: asyncio.Future, head: bytes) -> None:
        self.request = request
        self.ready = ready
        self.head = head  # the publish request up to the data string's opening quote
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.errors: list[str] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        data = self.buf + data
        if not self.ready.done():
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(data.split(b"\r\n", 1)[0].decode("latin-1")))
                return
            self.ready.set_result(None)
            data = data[end + 4 :]
        # Anything the server sends the publisher is an answer to a failed publish: keep its text.
        while len(data) >= 2:
            length, head = data[1] & 0x7F, 2
            if length == 126:
                length, head = int.from_bytes(data[2:4], "big"), 4
            elif length == 127:
                length, head = int.from_bytes(data[2:10], "big"), 10
            if len(data) < head + length:
                break
            if len(self.errors) < 20:
                self.errors.append(data[head : head + length].decode("utf-8", "replace")[:200])
            else:
                self.errors.append("")
            data = data[head + length :]
        self.buf = data

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed by the server"))

    def publish(self, data: str) -> None:
        self.transport.write(masked_frame(0x1, self.head + data.encode() + b'"}'))


def _request(url: str) -> bytes:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _payload(head: str, size: int) -> str:
    """``head`` padded with x to ``size`` characters (the ``data`` string of a publish)."""
    return head + " " + "x" * max(0, size - len(head) - 1)


async def _connect(loop, url: str, factory) -> None:
    parts = urlsplit(url)
    await loop.create_connection(factory, parts.hostname, parts.port or 80)


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    urls = [u for u in args.urls.split(",") if u]
    group = args.group.encode()
    measured = max(1, round(args.rate * args.duration))
    stats = Stats(measured, masked_frame(0x1, b'{"op":"subscribe","group":"' + group + b'"}'))
    subs: list[Subscriber] = []
    limit = asyncio.Semaphore(args.concurrency)
    connect_errors: list[str] = []

    async def join(i: int) -> None:
        url = urls[i % len(urls)]
        sub = Subscriber(_request(url), stats, loop.create_future())
        subs.append(sub)
        async with limit:
            try:
                await asyncio.wait_for(_connect(loop, url, lambda: sub), args.timeout)
                await asyncio.wait_for(sub.joined, args.timeout)
            except Exception as exc:  # counted and shown; the run goes on with those that joined
                if len(connect_errors) < 5:
                    connect_errors.append(f"{type(exc).__name__}: {exc}"[:200])
                if not sub.joined.done():
                    sub.joined.cancel()
                if sub.transport is not None:
                    sub.transport.abort()

    started = time.monotonic()
    await asyncio.gather(*(join(i) for i in range(args.subscribers)))
    joined = [s for s in subs if s.state == 2 and not s.transport.is_closing()]
    failed = args.subscribers - len(joined)
    emit(
        {
            "event": "joined",
            "ok": len(joined),
            "errors": failed,
            "seconds": time.monotonic() - started,
            "first_errors": connect_errors,
        }
    )

    ready = loop.create_future()
    pub = Publisher(_request(urls[0]), ready, b'{"op":"publish","group":"' + group + b'","data":"')
    await asyncio.wait_for(_connect(loop, urls[0], lambda: pub), args.timeout)
    await asyncio.wait_for(ready, args.timeout)

    # Warm-up: publish at the rate until every subscriber has had a warm-up message (each server
    # subscribes to the group at Redis when its first member joins, and that takes effect a little
    # later) and at least --warmup seconds have passed.
    warm_start = loop.time()
    k = 0
    period = 1.0 / args.rate
    while True:
        elapsed = loop.time() - warm_start
        if (
            stats.warm_subs >= len(joined) and elapsed >= args.warmup
        ) or elapsed > args.warmup + args.warm_timeout:
            break
        pub.publish(_payload(f"w{k} {_now_ns()}", args.size))
        k += 1
        await asyncio.sleep(period)
    await asyncio.sleep(0.2)  # the last warm-up messages land before the window opens
    emit(
        {
            "event": "ready",
            "warm_seconds": loop.time() - warm_start,
            "warm_messages": k,
            "warm_subscribers": stats.warm_subs,
            "publish_errors": len(pub.errors),
        }
    )

    t0 = await wait_go()
    await asyncio.sleep(max(0.0, t0 - loop.time()))
    cpu0, wall0 = proc_cpu_seconds(), time.monotonic()
    t0_ns = _now_ns()
    lag = 0.0
    for seq in range(measured):
        due = t0 + seq * period
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        pub.publish(_payload(f"{seq} {_now_ns()}", args.size))
    last_publish = time.monotonic()
    expected = measured * len(joined)
    deadline = last_publish + args.drain
    while stats.delivered < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    cpu1, wall1 = proc_cpu_seconds(), time.monotonic()
    emit({"event": "drained"})

    short = [s.count for s in joined if s.count < measured]
    extra = sum(s.count - measured for s in joined if s.count > measured)
    elapsed = (stats.last_ns - t0_ns) * 1e-9 if stats.last_ns else 0.0
    emit(
        {
            "event": "result",
            "subscribers": len(joined),
            "published": measured,
            "expected": expected,
            "delivered": stats.delivered,
            "subscribers_short": len(short),  # subscribers that missed at least one message
            "missing": sum(measured - c for c in short),
            "duplicates": extra,
            "disorder": stats.disorder,
            "foreign": stats.foreign,
            "lost_connections": stats.lost_conns,
            "publish_errors": len(pub.errors),
            "first_publish_errors": [e for e in pub.errors if e][:3],
            "publish_lag": lag,  # how late the publisher ran behind its schedule at worst
            "publish_seconds": last_publish - wall0,
            "delivery_seconds": elapsed,  # first publish to last delivery
            "drain_seconds": wall1 - last_publish,
            "window": wall1 - wall0,
            "cpu_seconds": cpu1 - cpu0,
            "latency_hist": histogram(stats.latencies),
        }
    )
    await read_command(args.hold)
    stats.closing = True
    for sub in subs:
        sub.close()
    pub.transport.close()
    await asyncio.sleep(0.3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.loadgen.fanout_client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--urls", required=True, help="comma list of ws:// URLs of the PubSub endpoint")
    p.add_argument("--subscribers", type=int, default=10_000)
    p.add_argument("--group", default="fanout")
    p.add_argument("--rate", type=float, default=20.0, help="messages published per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of measured publishing")
    p.add_argument("--warmup", type=float, default=1.0, help="least seconds of warm-up publishing")
    p.add_argument(
        "--warm-timeout",
        type=float,
        default=30.0,
        help="most seconds beyond --warmup to wait for every subscriber's first warm-up message",
    )
    p.add_argument("--size", type=int, default=64, help="characters of the published data string")
    p.add_argument(
        "--drain", type=float, default=10.0, help="most seconds to wait for deliveries after the last publish"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per connect and per subscribe")
    p.add_argument("--concurrency", type=int, default=200, help="subscribers connecting at once")
    p.add_argument(
        "--hold", type=float, default=120.0, help="most seconds to wait for 'close' after the result"
    )
    p.add_argument("--no-uvloop", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.subscribers < 1:
        raise SystemExit("--rate, --duration and --subscribers must be positive")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    try:
        if args.no_uvloop:
            raise ImportError
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
