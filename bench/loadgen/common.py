"""What every loadgen worker shares: the run state, the latency histogram, CPU time, talking to the driver."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from array import array
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
HIST_BASE = 1.02  # latency histogram: buckets 2 % wide, keyed by round(log(µs) / log(1.02))
_LOG_BASE = math.log(HIST_BASE)


def proc_cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of one process, from /proc (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def masked_frame(opcode: int, payload: bytes, mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """One complete client frame (FIN set, masked). The load generator writes pre-built frames: the
    server's work is the same whatever the mask, and the client saves masking and a copy per message."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = int.from_bytes(mask * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1) if n else 0
    body = (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little") if n else b""
    return header + mask + body


def histogram(samples: array) -> dict[str, int]:
    """Seconds → a sparse log histogram of microseconds (keys are strings for JSON)."""
    hist: dict[int, int] = {}
    for s in samples:
        us = s * 1e6
        key = round(math.log(us) / _LOG_BASE) if us >= 1.0 else 0
        hist[key] = hist.get(key, 0) + 1
    return {str(k): v for k, v in hist.items()}


def merge_histograms(hists: list[dict[str, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for k, v in h.items():
            out[int(k)] = out.get(int(k), 0) + v
    return out


def percentile_us(hist: dict[int, int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    rank = q * (total - 1)
    seen = 0
    for key in sorted(hist):
        seen += hist[key]
        if seen > rank:
            return HIST_BASE**key
    return HIST_BASE ** max(hist)


@dataclass
class Run:
    """Counters of one worker; the event loop flips ``measuring`` and ``sending`` on schedule."""

    size: int = 32
    sending: bool = False
    measuring: bool = False
    count: int = 0  # messages (or handshakes) completed inside the window
    errors: int = 0
    latencies: array = field(default_factory=lambda: array("d"))
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    window_start: float = 0.0
    window_end: float = 0.0

    def start_window(self) -> None:
        self.measuring = True
        self.window_start = time.monotonic()
        self.cpu_start = proc_cpu_seconds()

    def end_window(self) -> None:
        self.measuring = False
        self.window_end = time.monotonic()
        self.cpu_end = proc_cpu_seconds()

    def result(self, **extra) -> dict:
        elapsed = max(1e-9, self.window_end - self.window_start)
        return {
            "event": "result",
            "count": self.count,
            "errors": self.errors,
            "elapsed": elapsed,
            "bytes": self.count * self.size,
            "cpu_seconds": self.cpu_end - self.cpu_start,
            "latency_hist": histogram(self.latencies),
            **extra,
        }


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def read_command(timeout: float) -> str:
    """One line from the driver on stdin (``go <wall time>``, ``close``), or ``""`` at EOF / timeout."""
    loop = asyncio.get_running_loop()
    try:
        line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), timeout)
    except TimeoutError:
        return ""
    return line.strip()


def loop_time_of(wall: float) -> float:
    """The event loop's clock reading at wall-clock instant ``wall``."""
    return asyncio.get_running_loop().time() + (wall - time.time())


async def wait_go(timeout: float = 120.0) -> float:
    """Wait for ``go <wall>`` and return that instant on the loop's clock."""
    line = await read_command(timeout)
    if not line.startswith("go "):
        raise SystemExit(f"loadgen: expected 'go <time>', got {line!r}")
    return loop_time_of(float(line.split()[1]))


async def schedule_window(run: Run, t0: float, warmup: float, duration: float) -> None:
    """Senders start at loop time ``t0`` (they wait for it themselves); after ``warmup`` measure for
    ``duration``; then stop sending. ``sending`` is set at once, so no sender can see it still off at t0."""
    loop = asyncio.get_running_loop()
    run.sending = True
    await asyncio.sleep(max(0.0, t0 + warmup - loop.time()))
    run.start_window()
    await asyncio.sleep(max(0.0, t0 + warmup + duration - loop.time()))
    run.end_window()
    run.sending = False
