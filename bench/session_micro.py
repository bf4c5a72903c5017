"""Micro-benchmark of one worker's data path: a real Session on a socket pair, no handshake.

The server side is exactly what a worker runs after the 101: ``PlainTransport``, the sans-IO
``WebSocketProtocol``, the session's read watcher, the port's executor pool (greenlet or thread
mode) and the built-in ``Echo`` endpoint. The client side is a gevent greenlet writing pre-built
masked frames and reading the echoes, so the figure includes the client's (small, constant) cost;
compare variants of the server code by the difference, or run it under callgrind, whose
instruction counts do not move with other load on the machine:

    .venv/bin/python bench/session_micro.py --messages 20000 --size 32 --window 1
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python bench/session_micro.py --messages 5000 --quiet
    .venv/bin/python bench/session_micro.py --client-only   # what the client costs alone

Printed: µs of process CPU per echoed message (server + client), and with ``--client-only`` the
client's part (frames written and read on a socket pair with no server, a byte-for-byte reply).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
from gevent import socket as gsocket
from wsproto.frame_protocol import FrameProtocol

from wsserver.config import PoolConfig, PortConfig
from wsserver.endpoints.echo import Echo
from wsserver.protocol import WebSocketProtocol
from wsserver.runtime.pool import ExecutorPool, Scheduler
from wsserver.runtime.session import Session
from wsserver.runtime.transport import PlainTransport


def client_frame(size: int, binary: bool) -> bytes:
    payload: bytes | str = os.urandom(size) if binary else "x" * size
    return bytes(FrameProtocol(client=True, extensions=[]).send_data(payload))


def reply_size(size: int) -> int:
    return size + (2 if size <= 125 else 4 if size <= 0xFFFF else 10)


def run(messages: int, size: int, window: int, binary: bool, mode: str, conns: int, fast_path: bool) -> float:
    frame = client_frame(size, binary)
    per_reply = reply_size(size)
    scheduler = Scheduler()
    port = PortConfig(alias="bench", port=1, pool=PoolConfig(mode=mode))
    pool = ExecutorPool("bench", port.pool, scheduler)
    endpoint = Echo()
    clients = []
    for _ in range(conns):
        a, b = socket.socketpair()
        proto = WebSocketProtocol(max_message_size=max(port.max_message_size, size), fast_path=fast_path)
        session = Session(PlainTransport(a), ("127.0.0.1", 1), port, "/echo", endpoint, proto, pool)
        session.start()
        clients.append(gsocket.socket(fileno=b.detach()))

    rounds = max(1, messages // (window * conns))

    def client(sock: gsocket.socket) -> None:
        want = per_reply * window
        burst = frame * window
        for _ in range(rounds):
            sock.sendall(burst)
            got = 0
            while got < want:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("server closed")
                got += len(chunk)

    start = time.process_time()
    gevent.joinall([gevent.spawn(client, c) for c in clients], raise_error=True)
    spent = time.process_time() - start
    scheduler.stop()
    return 1e6 * spent / (rounds * window * conns)


def run_client_only(messages: int, size: int, window: int, binary: bool) -> float:
    """The client's own cost: the same writes and reads against a peer that answers in C."""
    frame = client_frame(size, binary)
    reply = bytes(reply_size(size))
    a, b = socket.socketpair()
    server, sock = gsocket.socket(fileno=a.detach()), gsocket.socket(fileno=b.detach())
    rounds = max(1, messages // window)

    def answer() -> None:
        need = len(frame) * window
        for _ in range(rounds):
            got = 0
            while got < need:
                got += len(server.recv(1 << 20))
            server.sendall(reply * window)

    def client() -> None:
        want = len(reply) * window
        for _ in range(rounds):
            sock.sendall(frame * window)
            got = 0
            while got < want:
                got += len(sock.recv(1 << 20))

    start = time.process_time()
    gevent.joinall([gevent.spawn(answer), gevent.spawn(client)], raise_error=True)
    return 1e6 * (time.process_time() - start) / (rounds * window)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--window", type=int, default=1, help="messages in flight per connection")
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--binary", action="store_true")
    p.add_argument("--mode", choices=("greenlet", "thread"), default="greenlet")
    p.add_argument("--no-fast-path", action="store_true")
    p.add_argument("--client-only", action="store_true")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quiet", action="store_true", help="one run, nothing printed (for callgrind)")
    args = p.parse_args()
    if args.quiet:
        run(args.messages, args.size, args.window, args.binary, args.mode, args.conns, not args.no_fast_path)
        return
    if args.client_only:
        best = min(
            run_client_only(args.messages, args.size, args.window, args.binary) for _ in range(args.repeat)
        )
        print(f"client alone: {best:.2f} µs per message")
        return
    best = min(
        run(args.messages, args.size, args.window, args.binary, args.mode, args.conns, not args.no_fast_path)
        for _ in range(args.repeat)
    )
    print(
        f"{args.mode}, {args.size} B, window {args.window}, {args.conns} conn(s): {best:.2f} µs per message "
        f"(server + client, best of {args.repeat})"
    )


if __name__ == "__main__":
    main()
