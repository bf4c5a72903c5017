"""Micro-benchmark of the sans-IO layer: µs per echo, no network.

One echo = feed one masked client frame, take the message event, send it back, drain the bytes.
Compared: wsproto's Connection + event dataclasses (the naive way), our WebSocketProtocol with
fast_path=False (wsproto's FrameProtocol driven directly) and with fast_path=True.
Figures are printed, not asserted; compare ratios within one run (see perf-notes.md).

    .venv/bin/python bench/protocol_micro.py [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, Message, TextMessage
from wsproto.frame_protocol import FrameProtocol

from wsserver.protocol import BinaryMessage, WebSocketProtocol
from wsserver.protocol import TextMessage as OurText


def client_frames(payload: bytes | str, count: int = 1) -> bytes:
    client = FrameProtocol(client=True, extensions=[])
    return b"".join(bytes(client.send_data(payload)) for _ in range(count))


def wsproto_connection_echo(wire: bytes):
    conn = Connection(ConnectionType.SERVER)

    def echo() -> bytes:
        conn.receive_data(wire)
        out = b""
        for event in conn.events():
            if isinstance(event, Message):
                cls = TextMessage if isinstance(event, TextMessage) else BytesMessage
                out += conn.send(cls(data=event.data))
        return out

    return echo


def our_echo(wire: bytes, fast_path: bool):
    proto = WebSocketProtocol(fast_path=fast_path)

    def echo() -> bytes:
        proto.receive_data(wire)
        for event in proto.events():
            if type(event) is OurText:
                proto.send_text(event.data)
            elif type(event) is BinaryMessage:
                proto.send_binary(event.data)
        return proto.data_to_send()

    return echo


def measure(fns: list, number: int, repeat: int, per: int) -> list[float]:
    """Min µs per echo of each fn; the runs are interleaved so host noise hits all alike."""
    for fn in fns:
        fn()  # warm up, and make sure it works
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], timeit.timeit(fn, number=number))
    return [t / number / per * 1e6 for t in best]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    cases = [
        ("32 B text, one frame per read", client_frames("x" * 32), 1, args.number),
        ("32 B text, 10 frames per read (pipelined)", client_frames("x" * 32, 10), 10, args.number // 10),
        (
            "64 KiB binary, one frame per read",
            client_frames(os.urandom(65536)),
            1,
            max(args.number // 100, 20),
        ),
    ]
    print(f"python {sys.version.split()[0]}; µs per echo (min of {args.repeat} runs)")
    header = f"{'case':44} {'wsproto Connection':>20} {'fast_path=False':>16} {'fast_path=True':>15}"
    print(header)
    print("-" * len(header))
    for name, wire, per, number in cases:
        fns = [wsproto_connection_echo(wire), our_echo(wire, False), our_echo(wire, True)]
        base, slow, fast = measure(fns, number, args.repeat, per)
        print(f"{name:44} {base:20.2f} {slow:16.2f} {fast:15.2f}   (fast = {base / fast:.1f}x faster)")


if __name__ == "__main__":
    main()
