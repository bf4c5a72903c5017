"""The fast path is invisible: fast_path=True and fast_path=False give the same events and bytes.

Every stream of the corpus is fed in random chunks (1..50 bytes, as a network would cut it, and
larger ones so the fast path sees complete frames) to both; after every chunk the events, the
outgoing bytes, the state and the close code must be identical.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from wsserver.protocol import WebSocketProtocol

from .test_protocol_frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, close_frame, frame

MAX_SIZE = 100_000
SIZES = (0, 1, 125, 126, 65535, 65536)


def _rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _key(seed: int) -> bytes:
    return random.Random(seed).randbytes(4)


def _text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    alphabet = "abcxyz é€𝄞\u0000\u07ff\uffff"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _corpus() -> dict[str, bytes]:
    c: dict[str, bytes] = {}
    for size in SIZES:
        c[f"binary-{size}"] = frame(BINARY, _rand(size, size), key=_key(size))
        c[f"text-{size}"] = frame(TEXT, _text(size // 3, size), key=_key(size + 1))
    c["all-sizes-pipelined"] = b"".join(
        frame(BINARY if i % 2 else TEXT, _text(s // 2, i) if i % 2 == 0 else _rand(s, i), key=_key(i))
        for i, s in enumerate(SIZES * 2)
    )
    c["many-small"] = b"".join(frame(TEXT, f"message {i}", key=_key(i)) for i in range(300))
    c["fragments"] = (
        frame(TEXT, "hel", fin=False)
        + frame(CONT, "", fin=False)
        + frame(CONT, "lo")
        + frame(BINARY, _rand(200, 1), fin=False)
        + frame(CONT, _rand(70000, 2))
        + frame(TEXT, "after")
    )
    c["utf8-split-across-frames"] = frame(TEXT, "€".encode()[:1], fin=False) + frame(CONT, "€".encode()[1:])
    c["interleaved-pings"] = (
        frame(TEXT, "a")
        + frame(PING, b"1")
        + frame(TEXT, "b", fin=False)
        + frame(PING, b"2" * 125)
        + frame(PONG, b"3")
        + frame(CONT, "c")
        + frame(PING)
        + frame(BINARY, _rand(300, 3))
    )
    c["close-with-reason"] = frame(TEXT, "x") + close_frame(1000, "done") + frame(TEXT, "ignored")
    c["close-without-code"] = frame(BINARY, b"x") + close_frame(None) + frame(PING)
    c["close-4000-unicode-reason"] = close_frame(4000, "fin é")
    c["invalid-utf8"] = frame(TEXT, "ok") + frame(TEXT, b"bad \xff here") + frame(TEXT, "never")
    c["invalid-utf8-split"] = frame(TEXT, b"\xe2\x82", fin=False) + frame(CONT, b"\x41")
    c["invalid-utf8-truncated"] = frame(TEXT, b"\xe2\x82")
    c["surrogate"] = frame(TEXT, b"\xed\xa0\x80")
    c["unmasked"] = frame(TEXT, "a") + frame(TEXT, "b", masked=False)
    for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF):
        c[f"reserved-opcode-{op:x}"] = frame(TEXT, "a") + frame(op, b"zz")
    for bit in (1, 2, 4, 5, 7):
        c[f"rsv-{bit}"] = frame(BINARY, b"a") + frame(BINARY, b"b", rsv=bit)
    c["fragmented-ping"] = frame(PING, b"x", fin=False) + frame(CONT, b"y")
    c["long-ping"] = frame(PING, b"x" * 126)
    c["continuation-first"] = frame(CONT, b"x")
    c["text-inside-fragmented"] = frame(TEXT, "a", fin=False) + frame(TEXT, "b")
    c["non-minimal-16"] = frame(TEXT, "short", encoding=16)
    c["non-minimal-64"] = frame(BINARY, _rand(300, 4), encoding=64)
    c["msb-64"] = struct.pack("!BBQ", 0x82, 0xFF, 1 << 63) + b"\x00" * 10
    for code in (999, 1004, 1005, 1006, 1015, 2999, 5000):
        c[f"bad-close-{code}"] = frame(TEXT, "a") + close_frame(code)
    c["close-1-byte"] = frame(CLOSE, b"\x03")
    c["close-reason-invalid-utf8"] = close_frame(1000, b"\xc3\x28")
    c["oversize-frame"] = frame(TEXT, "ok") + frame(BINARY, _rand(MAX_SIZE + 1, 5)) + frame(TEXT, "never")
    c["oversize-text-with-bad-utf8"] = frame(TEXT, b"a" * 50 + b"\xff" + b"a" * MAX_SIZE)
    c["exactly-max"] = frame(BINARY, _rand(MAX_SIZE, 6)) + frame(TEXT, "next")
    c["oversize-fragments"] = frame(BINARY, _rand(60000, 7), fin=False) + frame(CONT, _rand(60000, 8))
    c["truncated-stream"] = frame(TEXT, "a") + frame(BINARY, _rand(1000, 9))[:500]
    c["mixed-everything"] = b"".join(
        c[k] for k in ("many-small", "fragments", "interleaved-pings", "close-with-reason")
    )
    return c


CORPUS = _corpus()


def _chunks(data: bytes, rng: random.Random, low: int, high: int) -> list[bytes]:
    chunks, pos = [], 0
    while pos < len(data):
        n = rng.randint(low, high)
        chunks.append(data[pos : pos + n])
        pos += n
    return chunks


def _trace(proto: WebSocketProtocol, chunks: list[bytes]) -> list:
    trace = []
    for chunk in [*chunks, b""]:
        proto.receive_data(chunk)
        trace.append((proto.events(), proto.data_to_send(), proto.state, proto.close_code))
    return trace


@pytest.mark.parametrize("name", sorted(CORPUS))
@pytest.mark.parametrize(("low", "high"), [(1, 50), (1, 4096), (None, None)], ids=["1-50", "1-4096", "whole"])
def test_fast_path_equivalent_to_wsproto(name, low, high):
    stream = CORPUS[name]
    seeds = range(3) if low is not None else range(1)
    for seed in seeds:
        chunks = [stream] if low is None else _chunks(stream, random.Random(seed), low, high)
        fast = _trace(WebSocketProtocol(MAX_SIZE, fast_path=True), chunks)
        slow = _trace(WebSocketProtocol(MAX_SIZE, fast_path=False), chunks)
        assert fast == slow, f"{name}: seed {seed}"


def test_corpus_exercises_the_fast_path():
    """Guard against a silently disabled fast path making the equivalence test trivial."""
    proto = WebSocketProtocol(MAX_SIZE)
    proto.receive_data(CORPUS["many-small"])
    assert proto._fast_ready and len(proto.events()) == 300
    proto = WebSocketProtocol(MAX_SIZE)
    proto.receive_data(CORPUS["all-sizes-pipelined"])
    assert len(proto.events()) == 12
    assert proto._wsproto is None  # the fast path did not need wsproto for these


@pytest.mark.parametrize("seed", range(20))
def test_random_frame_soup(seed):
    """Random valid and invalid frames, randomly cut: still no difference."""
    rng = random.Random(seed)
    parts = []
    for _ in range(40):
        kind = rng.random()
        size = rng.choice((0, 1, 5, 125, 126, 300, 2000))
        if kind < 0.5:
            parts.append(
                frame(
                    rng.choice((TEXT, BINARY)), _text(size, rng.random()).encode()[:size], key=os.urandom(4)
                )
            )
        elif kind < 0.6:
            parts.append(frame(PING, _rand(min(size, 125), seed)))
        elif kind < 0.7:
            parts.append(frame(TEXT, "x" * size, fin=False) + frame(CONT, "y"))
        elif kind < 0.75:
            parts.append(frame(TEXT, _rand(size, seed)))  # most likely invalid UTF-8
        elif kind < 0.8:
            parts.append(
                frame(rng.randrange(16), _rand(size, seed), rsv=rng.randrange(8), fin=rng.random() < 0.8)
            )
        else:
            parts.append(frame(BINARY, _rand(size, seed)))
    stream = b"".join(parts)
    chunks = _chunks(stream, rng, 1, rng.choice((50, 500, 5000)))
    assert _trace(WebSocketProtocol(MAX_SIZE, fast_path=True), chunks) == _trace(
        WebSocketProtocol(MAX_SIZE, fast_path=False), chunks
    )
