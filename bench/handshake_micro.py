"""Micro-benchmark of the server side of a connection: connect + handshake + one echo + close.

The real runtime (``WorkerRuntime`` on a loopback listener, the bench config of
``bench/servers.py``: no compression, no timers, log level warning) runs in this process; a
client in a child process opens ``--conns`` connections at a time, each doing the upgrade
request, reading the 101, sending one masked 32-byte text frame, reading the echo, sending a
close frame and reading the close reply. This process's CPU time over the measured
connections gives µs per connection (server side only; the client is another process).

    .venv/bin/python bench/handshake_micro.py [-n 2000] [--warmup 200] [--conns 16] [--pin]
    .venv/bin/python bench/handshake_micro.py --profile          # cProfile of the measured part

Instruction counts, immune to other load on the machine: run under callgrind twice with
different ``-n`` and divide the difference by the difference in connections (start-up cancels
out); ``--callgrind`` does exactly that and prints instructions per connection:

    .venv/bin/python bench/handshake_micro.py --callgrind -n 400 --base 100 --warmup 50   # ~70 s

Under callgrind the server runs ~50x slower than the client, so it finds more work per wake-up
than at full speed: compare variants with the same -n/--base/--warmup, not with µs figures.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONFIG = """\
[server]
workers = 1
graceful_timeout = 2
log_level = "warning"

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[ports]]
alias = "bench"
port = {port}
bind = "127.0.0.1"
protocol = "ws"
compression = {compression}
idle_timeout_ms = 0
ping_interval_ms = 0
max_connections = 0
backlog = 6000
"""

MASK = b"\x11\x22\x33\x44"


# -- the client (a child process, plain asyncio, not measured) -----------------------------------


def _client(port: int, warmup: int, count: int, conns: int, deflate: bool) -> None:
    import asyncio
    import base64

    payload = b"i" * 32
    frame = bytes((0x81, 0x80 | len(payload))) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    close = bytes((0x88, 0x82)) + MASK + bytes(b ^ MASK[i] for i, b in enumerate(b"\x03\xe8"))
    ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"{ext}\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1"))
        writer.write(frame)
        echo = await reader.readexactly(2 + 32)
        if echo[0] != 0x81 or echo[2:] != payload:
            raise ConnectionError(f"bad echo {echo!r}")
        writer.write(close)
        reply = await reader.readexactly(4)
        if reply != b"\x88\x02\x03\xe8":
            raise ConnectionError(f"bad close reply {reply!r}")
        await reader.read()  # the server closes TCP after the closing handshake
        writer.close()

    async def batch(total: int) -> None:
        left = total

        async def loop() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one()

        await asyncio.gather(*(loop() for _ in range(min(conns, total))))

    async def main() -> None:
        await batch(warmup)
        print("go", flush=True)
        sys.stdin.readline()  # the server took its CPU snapshot
        await batch(count)
        print("done", flush=True)

    asyncio.run(main())


# -- the server (this process) -------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> dict:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent import subprocess as gsubprocess

    from wsserver.config.loader import parse_config
    from wsserver.runtime.listeners import bind_listener
    from wsserver.runtime.worker import WorkerRuntime

    if args.pin:
        os.sched_setaffinity(0, {0})
    import socket

    with socket.socket() as probe:  # a free port (the config wants a fixed one)
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    config = parse_config(
        CONFIG.format(compression="true" if args.deflate else "false", port=free), "<handshake_micro>"
    )
    port_cfg = config.ports[0]
    listener = bind_listener(port_cfg)
    runtime = WorkerRuntime(config, [listener])
    runtime.start()
    port = listener.address[1]
    client_cmd = [
        sys.executable,
        __file__,
        "--client",
        str(port),
        "--warmup",
        str(args.warmup),
        "-n",
        str(args.n),
        "--conns",
        str(args.conns),
    ] + (["--deflate"] if args.deflate else [])
    preexec = (lambda: os.sched_setaffinity(0, {1})) if args.pin else None
    child = gsubprocess.Popen(client_cmd, stdin=gsubprocess.PIPE, stdout=gsubprocess.PIPE, preexec_fn=preexec)
    line = child.stdout.readline()
    if line.strip() != b"go":
        raise SystemExit(f"client failed in warm-up: {line!r}")
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU, not wall: idle waits are not costs
        profiler.enable()
    ru0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    child.stdin.write(b"go\n")
    child.stdin.flush()
    line = child.stdout.readline()
    ru1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if profiler is not None:
        profiler.disable()
    if line.strip() != b"done":
        raise SystemExit(f"client failed: {line!r}")
    child.wait()
    stats = runtime.ports[0].dispatcher.stats
    runtime.stop(1.0)
    gevent.sleep(0)
    user, system = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
    result = {
        "us_per_conn": (user + system) / args.n * 1e6,
        "user_us": user / args.n * 1e6,
        "sys_us": system / args.n * 1e6,
        "wall_s": wall1 - wall0,
        "conns_per_s": args.n / (wall1 - wall0),
        "rejected": dict(getattr(stats, "rejected", {}) or {}),
    }
    if profiler is not None:
        import pstats

        stats_ = pstats.Stats(profiler)
        if args.dump:
            stats_.dump_stats(args.dump)
        stats_.sort_stats(args.sort).print_stats(args.top)
    return result


def _callgrind_total(n: int, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "-n",
            str(n),
            "--warmup",
            str(args.warmup),
            "--conns",
            str(args.conns),
        ]
        if args.deflate:
            cmd.append("--deflate")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.keep:
            keep = Path(args.keep).with_suffix(f".{n}")
            keep.write_bytes(out.read_bytes())
            print(f"kept {keep}", file=sys.stderr)
        text = out.read_text(errors="replace")
    match = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    if match is None:
        raise SystemExit("no totals in the callgrind output")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=2000, help="measured connections")
    parser.add_argument("--warmup", type=int, default=200, help="connections before measuring")
    parser.add_argument("--conns", type=int, default=16, help="connections in flight (the bench uses 16)")
    parser.add_argument("--deflate", action="store_true", help="the client offers permessage-deflate")
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, client on CPU 1")
    parser.add_argument("--repeat", type=int, default=1, help="runs (the best is reported)")
    parser.add_argument("--profile", action="store_true", help="cProfile the measured connections")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--dump", help="--profile: also write the pstats to this file")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--callgrind", action="store_true", help="instructions per connection (two runs)")
    parser.add_argument("--base", type=int, default=100, help="--callgrind: connections of the baseline run")
    parser.add_argument("--keep", help="--callgrind: keep the outputs as KEEP.<n>")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:
        _client(args.client, args.warmup, args.n, args.conns, args.deflate)
        return
    if args.callgrind:
        base = _callgrind_total(args.base, args)
        full = _callgrind_total(args.n, args)
        per = (full - base) / (args.n - args.base)
        print(
            f"instructions per connection: {per:,.0f}  ({args.n} vs {args.base} connections: "
            f"{full:,} - {base:,})"
        )
        return
    best = None
    for _ in range(args.repeat):
        result = _serve(args) if args.repeat == 1 else _run_child(args)
        split = f"user {result['user_us']:.0f} + sys {result['sys_us']:.0f}, " if "user_us" in result else ""
        print(
            f"server CPU {result['us_per_conn']:.1f} µs/connection  ({split}{args.n} connections, "
            f"{result['conns_per_s']:,.0f}/s wall, rejected {result['rejected']})",
            flush=True,
        )
        best = result if best is None or result["us_per_conn"] < best["us_per_conn"] else best
    if args.repeat > 1:
        print(f"best {best['us_per_conn']:.1f} µs/connection")


def _run_child(args: argparse.Namespace) -> dict:
    """One run in a fresh process (gevent's monkey-patching is once per process)."""
    cmd = [
        sys.executable,
        __file__,
        "-n",
        str(args.n),
        "--warmup",
        str(args.warmup),
        "--conns",
        str(args.conns),
    ]
    cmd += ["--deflate"] * args.deflate + ["--pin"] * args.pin
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    match = re.search(
        r"server CPU ([\d.]+) µs/connection\s+\((?:user (\d+) \+ sys (\d+), )?.*?([\d,]+)/s wall, rejected (.*)\)",
        out,
    )
    if match is None:
        raise SystemExit(f"unexpected output: {out!r}")
    return {
        "us_per_conn": float(match.group(1)),
        "user_us": float(match.group(2)),
        "sys_us": float(match.group(3)),
        "conns_per_s": float(match.group(4).replace(",", "")),
        "rejected": match.group(5),
    }


if __name__ == "__main__":
    main()
