"""Micro-benchmark of a broadcast in one worker: server CPU µs per delivered message.

N real sessions (``Session`` on socket pairs, the worker's code path after the handshake) join
one group; one message a turn of the event loop is published to it with ``Groups.publish``
(what ``session.broadcast`` and the Chat endpoint call), M times. Every member gets every
message through its own socket; the clients do not read during the window (their socket
buffers hold it all), so the figure is the server's side alone: encoding, queueing and one
``send`` per member per turn. ``--encode-per-member`` sends through ``session.send`` instead,
the way a broadcast cost before the frame was encoded once, for comparison.

    .venv/bin/python bench/broadcast_micro.py                  # N = 1, 100, 1000
    .venv/bin/python bench/broadcast_micro.py --members 1000 --size 1024
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent

from wsserver.config import PortConfig
from wsserver.endpoints.base import Endpoint
from wsserver.protocol import WebSocketProtocol
from wsserver.runtime.groups import Groups
from wsserver.runtime.pool import ExecutorPool, Scheduler
from wsserver.runtime.session import Session
from wsserver.runtime.transport import PlainTransport


def run(members: int, messages: int, size: int, per_member: bool) -> float:
    scheduler = Scheduler()
    port = PortConfig(alias="bench", port=1)
    pool = ExecutorPool("bench", port.pool, scheduler)
    endpoint = Endpoint()
    groups = Groups()  # one worker's
    sessions, peers = [], []
    for _ in range(members):
        a, b = socket.socketpair()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        session = Session(
            PlainTransport(a),
            ("127.0.0.1", 1),
            port,
            "/b",
            endpoint,
            WebSocketProtocol(),
            pool,
            groups=groups,
        )
        session.start()
        session.join("room")
        sessions.append(session)
        peers.append(b)
    gevent.sleep(0.01)
    text = "x" * size

    def publish_all() -> None:
        for _ in range(messages):
            if per_member:
                for session in groups.members("room"):
                    session.send(text)
            else:
                groups.publish("room", text)
            gevent.sleep(0)  # the next message in the next turn, as from another client's read

    start = time.process_time()
    gevent.spawn(publish_all).join()
    gevent.sleep(0)  # the last turn's writes
    spent = time.process_time() - start
    closed = sum(1 for session in sessions if session.closed)
    if closed:
        raise RuntimeError(f"{closed} member(s) closed during the run: the figure would be wrong")
    for session in sessions:
        session.abort()
    for peer in peers:
        peer.close()
    gevent.sleep(0.01)
    scheduler.stop()
    return 1e6 * spent / (messages * members)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", default="1,100,1000", help="comma list of group sizes")
    p.add_argument("--deliveries", type=int, default=100_000, help="messages delivered per measurement")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--encode-per-member", action="store_true")
    args = p.parse_args()
    how = "session.send per member" if args.encode_per_member else "groups.publish (one encoding)"
    print(
        f"broadcast of {args.size} B text, {how}: server CPU µs per delivered message (best of {args.repeat})"
    )
    for n in (int(x) for x in args.members.split(",")):
        # At most 5000 per member: the members do not read, and their socket buffers must hold it all.
        messages = max(20, min(5000, args.deliveries // n))
        best = min(run(n, messages, args.size, args.encode_per_member) for _ in range(args.repeat))
        print(f"  {n:5d} member(s) x {messages} messages: {best:6.2f} µs per delivered message")


if __name__ == "__main__":
    main()
