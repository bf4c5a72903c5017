"""Run several loadgen worker processes as one load, pinned to the client's CPUs, and merge what they report."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.loadgen.common import merge_histograms, percentile_us

REPO = Path(__file__).resolve().parents[2]


@dataclass
class LoadSpec:
    scenario: str  # echo | handshake | idle | storm
    url: str
    conns: int  # in total, split over the processes
    procs: int = 1
    window: int = 1
    size: int = 32
    binary: bool = False
    warmup: float = 1.0
    duration: float = 5.0
    timeout: float = 10.0
    compression: bool = False
    client: str = "picows"
    cpus: str = "1"  # taskset list; "" = not pinned
    spread_sources: bool = False  # give each process its own 127.0.0.x source address
    python: str = sys.executable
    extra: list[str] = field(default_factory=list)


def _raise_nofile() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:  # root may raise the hard limit too (up to fs.nr_open)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Load:
    """The worker processes of one load; every one is stopped by its PID in ``stop()``."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.procs: list[subprocess.Popen] = []
        self.lines: list[queue.Queue] = []
        self.stderr: list[list[str]] = []

    def start(self) -> Load:
        spec = self.spec
        n = max(1, min(spec.procs, spec.conns))
        host = urlsplit(spec.url).hostname or ""
        for i in range(n):
            share = spec.conns // n + (1 if i < spec.conns % n else 0)
            cmd = [
                spec.python,
                "-m",
                "bench.loadgen",
                "--scenario",
                spec.scenario,
                "--client",
                spec.client,
                "--url",
                spec.url,
                "--conns",
                str(share),
                "--window",
                str(spec.window),
                "--size",
                str(spec.size),
                "--warmup",
                str(spec.warmup),
                "--duration",
                str(spec.duration),
                "--timeout",
                str(spec.timeout),
                "--insecure",
                *spec.extra,
            ]
            if spec.binary:
                cmd.append("--binary")
            if spec.compression:
                cmd.append("--compression")
            if spec.spread_sources and host.startswith("127."):
                cmd += ["--local-addr", f"127.0.{1 + i // 250}.{2 + i % 250}"]
            if spec.cpus and shutil.which("taskset"):
                cmd = ["taskset", "-c", spec.cpus, *cmd]
            env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=_raise_nofile,
            )
            lines: queue.Queue = queue.Queue()
            errs: list[str] = []
            threading.Thread(target=self._pump, args=(proc.stdout, lines), daemon=True).start()
            threading.Thread(target=self._collect, args=(proc.stderr, errs), daemon=True).start()
            self.procs.append(proc)
            self.lines.append(lines)
            self.stderr.append(errs)
        return self

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    @staticmethod
    def _collect(stream, out: list[str]) -> None:
        for line in stream:
            if len(out) < 200:
                out.append(line.rstrip())

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _next(self, i: int, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"loadgen worker {i}: no '{event}' in {timeout:.0f}s; stderr: "
                    + " | ".join(self.stderr[i][-5:])
                )
            try:
                line = self.lines[i].get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                time.sleep(0.1)
                raise RuntimeError(
                    f"loadgen worker {i} exited before '{event}': " + " | ".join(self.stderr[i][-8:])
                )
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == event:
                return obj

    def wait(self, event: str, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        return [self._next(i, event, max(0.1, deadline - time.monotonic())) for i in range(len(self.procs))]

    def send(self, line: str) -> None:
        for proc in self.procs:
            try:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def go(self, at_wall: float) -> None:
        self.send(f"go {at_wall:.6f}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def merge(results: list[dict], client_cores: int) -> dict:
    """Sum the workers' counts; rates per worker window; percentiles from the merged histogram."""
    hist = merge_histograms([r.get("latency_hist", {}) for r in results])
    elapsed = max((r["elapsed"] for r in results), default=0.0)
    count = sum(r["count"] for r in results)
    rate = sum(r["count"] / r["elapsed"] for r in results if r["elapsed"] > 0)
    byte_rate = sum(r["bytes"] / r["elapsed"] for r in results if r["elapsed"] > 0)
    cpu = sum(r["cpu_seconds"] for r in results)
    out = {
        "count": count,
        "errors": sum(r["errors"] for r in results),
        "elapsed": elapsed,
        "rate": rate,
        "bytes_per_s": byte_rate,
        "client_cpu_seconds": cpu,
        "client_cpu_pct": 100.0 * cpu / elapsed / max(1, client_cores) if elapsed > 0 else None,
        "p50_us": percentile_us(hist, 0.50),
        "p99_us": percentile_us(hist, 0.99),
        "workers": len(results),
    }
    times = [r["time_to_all"] for r in results if r.get("time_to_all") is not None]
    if times:
        out["time_to_all"] = max(times)
    if any("deflate_negotiated" in r for r in results):
        out["deflate_negotiated"] = sum(r.get("deflate_negotiated", 0) for r in results)
    return out
