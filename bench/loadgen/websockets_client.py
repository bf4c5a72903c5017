"""The python-websockets client (asyncio implementation, on uvloop when installed): the alternative that
was measured against picows, and the fallback where picows is not installed."""

from __future__ import annotations

import asyncio
import ssl
from time import perf_counter

from websockets.asyncio.client import connect

from bench.loadgen.common import Run, emit, schedule_window, wait_go


def _kwargs(args) -> dict:
    kwargs: dict = {
        "compression": None,
        "max_size": None,
        "ping_interval": None,
        "open_timeout": args.timeout,
    }
    if args.local_addr:
        kwargs["local_addr"] = (args.local_addr, 0)
    if args.url.startswith("wss:"):
        ctx = ssl.create_default_context()
        if args.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        kwargs["ssl"] = ctx
    return kwargs


def _payload(args) -> bytes | str:
    return b"b" * args.size if args.binary else "t" * args.size


async def run_echo(args, run: Run) -> None:
    payload = _payload(args)
    kwargs = _kwargs(args)
    limit = asyncio.Semaphore(64)

    async def connect_one():
        async with limit:
            try:
                return await asyncio.wait_for(connect(args.url, **kwargs), args.timeout)
            except Exception:
                run.errors += 1
                return None

    conns = [c for c in await asyncio.gather(*(connect_one() for _ in range(args.conns))) if c]
    emit({"event": "ready", "ok": len(conns), "errors": run.errors})
    t0 = await wait_go()
    loop = asyncio.get_running_loop()

    async def request_response(ws) -> None:
        await asyncio.sleep(max(0.0, t0 - loop.time()))
        while run.sending:
            started = perf_counter()
            await ws.send(payload)
            await ws.recv()
            if run.measuring:
                run.count += 1
                run.latencies.append(perf_counter() - started)

    async def windowed(ws) -> None:
        await asyncio.sleep(max(0.0, t0 - loop.time()))
        credit = asyncio.Semaphore(args.window)

        async def sender() -> None:
            while run.sending:
                await credit.acquire()
                if not run.sending:
                    credit.release()
                    break
                await ws.send(payload)

        task = asyncio.ensure_future(sender())
        try:
            while run.sending or credit._value < args.window:
                await ws.recv()
                if run.measuring:
                    run.count += 1
                credit.release()
        finally:
            task.cancel()

    body = request_response if args.window == 1 else windowed
    tasks = [asyncio.ensure_future(body(ws)) for ws in conns]
    await schedule_window(run, t0, args.warmup, args.duration)
    await asyncio.wait(tasks, timeout=3.0)
    for task in tasks:
        task.cancel()
    emit(run.result(connections=len(conns)))
    await asyncio.wait([asyncio.ensure_future(ws.close()) for ws in conns] or [asyncio.sleep(0)], timeout=2.0)


async def run_handshakes(args, run: Run) -> None:
    payload = _payload(args)
    kwargs = _kwargs(args)

    async def one() -> None:
        async with connect(args.url, **kwargs) as ws:
            await ws.send(payload)
            await ws.recv()

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
