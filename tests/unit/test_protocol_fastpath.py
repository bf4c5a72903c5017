"""The fast path, frame by frame: cut at every byte, large payloads, and both maskers.

``test_protocol_equivalence.py`` feeds a corpus in random chunks; here every boundary of a
stream is tried, 64 KiB and 16 MiB payloads go through the piece-by-piece path
(``PartialFrame``), and the C masker is checked against the pure-Python one it replaces.
"""

from __future__ import annotations

import itertools
import random

import pytest

from wsserver.protocol import BinaryMessage, CloseReceived, TextMessage, WebSocketProtocol, fastpath

from .test_protocol_equivalence import _trace
from .test_protocol_frames import BINARY, TEXT, frame


def _same_both_ways(stream: bytes, cuts: list[int], max_size: int = 1 << 20) -> list:
    edges = [0, *sorted(set(cuts)), len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(edges) if b > a]
    fast = _trace(WebSocketProtocol(max_size, fast_path=True), chunks)
    slow = _trace(WebSocketProtocol(max_size, fast_path=False), chunks)
    assert fast == slow
    return fast


def _messages(trace: list) -> list:
    return [e for events, *_ in trace for e in events if isinstance(e, (TextMessage, BinaryMessage))]


SMALL = (
    frame(TEXT, "héllo €") + frame(BINARY, bytes(range(200))) + frame(TEXT, "x" * 126) + frame(BINARY, b"")
)


def test_every_single_cut_of_small_frames():
    for cut in range(1, len(SMALL)):
        trace = _same_both_ways(SMALL, [cut])
        assert len(_messages(trace)) == 4, cut


def test_every_pair_of_cuts_in_a_text_frame():
    stream = frame(TEXT, "añb€" * 40) + frame(TEXT, "end")
    for a in range(1, len(stream)):
        for b in range(a + 1, len(stream), 7):
            _same_both_ways(stream, [a, b])


@pytest.mark.parametrize("size", [65536, 70000])
def test_64k_frame_cut_anywhere(size):
    payload = random.Random(size).randbytes(size)
    stream = frame(BINARY, payload) + frame(TEXT, "after")
    rng = random.Random(1)
    cuts = [
        *range(1, 20),
        *range(len(stream) - 20, len(stream)),
        *rng.sample(range(20, len(stream) - 20), 150),
    ]
    for cut in cuts:
        trace = _same_both_ways(stream, [cut])
        assert _messages(trace) == [BinaryMessage(payload), TextMessage("after")], cut
    # As a socket delivers it: 64 KiB reads, and one byte at a time around the header.
    trace = _same_both_ways(stream, list(range(1, 16)) + list(range(16, len(stream), 65536)))
    assert _messages(trace) == [BinaryMessage(payload), TextMessage("after")]


def test_64k_text_with_bad_utf8_fails_on_the_read_that_brings_it():
    text = ("€" * 30000).encode()
    bad = text[:40000] + b"\xff" + text[40001:]
    stream = frame(TEXT, bad)
    for cut in (10, 39000, 40010, 40014, 40015, 40016, 60000):
        trace = _same_both_ways(stream, [cut, cut + 3000])
        closes = [e for events, *_ in trace for e in events if isinstance(e, CloseReceived)]
        assert closes == [CloseReceived(1007, "invalid frame payload data")]


def test_16mib_payload_in_64k_reads():
    payload = random.Random(16).randbytes(16 << 20)
    stream = frame(BINARY, payload)
    proto = WebSocketProtocol(32 << 20)
    for pos in range(0, len(stream), 65536):
        proto.receive_data(stream[pos : pos + 65536])
        if pos + 65536 < len(stream):
            assert proto.bytes_wanted() == len(stream) - pos - 65536
    assert proto.events() == [BinaryMessage(payload)]
    assert proto._wsproto is None  # never handed to wsproto


def test_16mib_same_as_wsproto_in_uneven_reads():
    payload = random.Random(17).randbytes(16 << 20)
    stream = frame(BINARY, payload) + frame(TEXT, "next")
    cuts = list(range(7, len(stream), 300_007))
    trace = _same_both_ways(stream, cuts, max_size=32 << 20)
    assert _messages(trace) == [BinaryMessage(payload), TextMessage("next")]


def test_unmasked_frame_refused_at_every_cut():
    stream = frame(TEXT, "ok") + frame(BINARY, b"z" * 300, masked=False)
    for cut in range(1, len(stream)):
        trace = _same_both_ways(stream, [cut])
        closes = [e for events, *_ in trace for e in events if isinstance(e, CloseReceived)]
        assert closes == [CloseReceived(1002, "protocol error")], cut


def test_declared_size_over_the_limit_fails_at_the_header():
    stream = frame(BINARY, b"y" * 5000)
    for cut in range(1, 9):
        trace = _same_both_ways(stream, [cut], max_size=4999)
        assert trace[0][0] == [] or cut == 8
        closes = [e for events, *_ in trace for e in events if isinstance(e, CloseReceived)]
        assert closes == [CloseReceived(1009, "message too big")]


@pytest.mark.skipif(not fastpath.SPEEDUPS, reason="the C accelerator was not built")
def test_c_masker_equals_python_masker():
    rng = random.Random(5)
    for n in [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 125, 126, 1023, 1024, 1025, 4096, 65536, 65539]:
        data = rng.randbytes(n + 20)
        for mask_pos in (0, 1, 3):
            end = mask_pos + 4 + n
            assert fastpath.unmask_at(data, mask_pos, end) == fastpath._unmask_at_py(data, mask_pos, end)
        key = rng.randbytes(4)
        for offset in range(8):
            assert fastpath.mask(data, 2, 2 + n, key, offset) == fastpath._mask_py(
                data, 2, 2 + n, key, offset
            )
    with pytest.raises(ValueError):
        fastpath.unmask_at(b"abc", 0, 10)
    with pytest.raises(ValueError):
        fastpath.mask(b"abc", 0, 3, b"12", 0)


def test_pure_python_maskers_give_the_same_results(monkeypatch):
    """Where no compiler built the accelerator, the fallback takes every path above."""
    monkeypatch.setattr(fastpath, "unmask_at", fastpath._unmask_at_py)
    monkeypatch.setattr(fastpath, "mask", fastpath._mask_py)
    payload = random.Random(9).randbytes(70000)
    stream = frame(BINARY, payload) + frame(TEXT, "é" * 700) + SMALL
    for cut in (1, 9, 100, 40000, 70013, 70014, 70500):
        trace = _same_both_ways(stream, [cut])
        assert _messages(trace)[:2] == [BinaryMessage(payload), TextMessage("é" * 700)]
