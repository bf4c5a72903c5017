"""One load generator worker process: ``python -m bench.loadgen --scenario rr --url ws://127.0.0.1:9001/echo``.

It prints JSON lines on stdout (``ready``, then ``result``) and takes ``go <wall time>`` / ``close`` on stdin;
``bench.loadgen.driver`` runs several of them.
"""

from __future__ import annotations

import argparse
import asyncio
import resource

from bench.loadgen.common import Run

SCENARIOS = ("echo", "handshake", "idle", "storm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--scenario", choices=SCENARIOS, required=True)
    p.add_argument(
        "--client",
        choices=("picows", "websockets", "raw"),
        default="picows",
        help="echo: picows or websockets; handshake: any of the three",
    )
    p.add_argument("--url", required=True)
    p.add_argument(
        "--conns", type=int, default=64, help="connections (echo, idle, storm) or concurrent loops"
    )
    p.add_argument("--window", type=int, default=1, help="messages in flight per connection (echo)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--binary", action="store_true")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per connect / handshake / echo")
    p.add_argument("--hold", type=float, default=300.0, help="idle: longest wait for 'close'")
    p.add_argument("--compression", action="store_true", help="offer permessage-deflate (idle, storm)")
    p.add_argument(
        "--local-addr", default="", help="source address, e.g. 127.0.0.2 (spreads ephemeral ports)"
    )
    p.add_argument("--insecure", action="store_true", help="wss: do not verify the certificate")
    p.add_argument("--no-uvloop", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    run = Run(size=args.size)
    if args.scenario == "echo":
        if args.client in ("picows", "raw"):
            from bench.loadgen.picows_client import run_echo
        else:
            from bench.loadgen.websockets_client import run_echo
        coro = run_echo(args, run)
    elif args.scenario == "handshake":
        if args.client == "raw":
            from bench.loadgen.raw_client import run_handshakes
        elif args.client == "picows":
            from bench.loadgen.picows_client import run_handshakes
        else:
            from bench.loadgen.websockets_client import run_handshakes
        coro = run_handshakes(args, run)
    elif args.scenario == "idle":
        from bench.loadgen.raw_client import run_idle

        coro = run_idle(args, run)
    else:
        from bench.loadgen.raw_client import run_storm

        coro = run_storm(args, run)
    try:
        if args.no_uvloop:
            raise ImportError
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
