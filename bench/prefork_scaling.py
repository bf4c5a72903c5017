#!/usr/bin/env python3
"""How wsserver scales with worker processes: messages/s and handshakes/s for 1, 2 and 4 workers.

    .venv/bin/python bench/prefork_scaling.py                       # shared sockets and reuse_port
    .venv/bin/python bench/prefork_scaling.py --modes shared --workers 1,2 --duration 5
    .venv/bin/python bench/prefork_scaling.py --server-cpus 0-1 --client-cpus 1   # overlapping CPUs

The server (master + workers) runs pinned to ``--server-cpus`` and the load generator
(``bench.loadgen``, picows echo clients and raw handshake loops, on uvloop) to ``--client-cpus``;
by default the client gets the last CPU and the server the others. Printed per mode and worker
count: messages/s (``--conns`` connections, ``--window`` messages in flight each) and
handshakes/s (connect + upgrade + one echo + close, ``--hs-loops`` concurrent loops), the ratio
to 1 worker, the server's CPU (master + workers, from /proc) and the client's CPU, as % of one
core. A client near 100 % of its cores is the bottleneck: the ratio then says nothing about the
server. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.loadgen.driver import Load, LoadSpec, merge  # noqa: E402
from bench.procfs import tree_cpu_seconds, tree_pids  # noqa: E402

CONFIG = """\
[server]
workers = {workers}
graceful_timeout = 2
log_level = "warning"

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[ports]]
alias = "bench"
bind = "127.0.0.1"
port = {port}
backlog = 4096
compression = false
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ncpu = os.cpu_count() or 1
    default_server = f"0-{ncpu - 2}" if ncpu > 2 else "0"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2,4", help="comma list of worker counts")
    p.add_argument("--modes", default="shared,reuse_port", help="shared and/or reuse_port")
    p.add_argument("--server-cpus", default=default_server if ncpu > 1 else "", help="taskset list")
    p.add_argument("--client-cpus", default=str(ncpu - 1) if ncpu > 1 else "", help="taskset list")
    p.add_argument("--client-procs", type=int, default=0, help="load generator processes (default: its CPUs)")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--hs-loops", type=int, default=32)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--client", choices=("picows", "websockets"), default="picows")
    return p.parse_args(argv)


def cores(cpus: str) -> int:
    if not cpus:
        return os.cpu_count() or 1
    n = 0
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``wsserver serve`` pinned to some CPUs; stopped by its PID (and any worker left, by PID)."""

    def __init__(self, workers: int, reuse_port: bool, cpus: str, workdir: Path) -> None:
        self.port = free_port()
        self.config = workdir / f"prefork-{workers}-{int(reuse_port)}.toml"
        self.config.write_text(CONFIG.format(workers=workers, port=self.port))
        self.log = workdir / f"prefork-{workers}-{int(reuse_port)}.log"
        cmd = [sys.executable, "-m", "wsserver", "serve", "-c", str(self.config)]
        if reuse_port:
            cmd.append("--reuse-port")
        if cpus and shutil.which("taskset"):
            cmd = ["taskset", "-c", cpus, *cmd]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.workers = workers

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echo"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text(errors='replace')[-2000:]}")
            if len(tree_pids(self.pid)) == self.workers + 1:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    time.sleep(0.5)  # every worker through its boot
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError("server not ready")

    def stop(self) -> None:
        pids = tree_pids(self.pid)
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        for pid in pids[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


def measure(server: Server, args: argparse.Namespace, scenario: str) -> dict:
    procs = args.client_procs or cores(args.client_cpus)
    spec = LoadSpec(
        scenario=scenario,
        url=server.url,
        procs=procs,
        window=args.window,
        size=args.size,
        conns=args.hs_loops if scenario == "handshake" else args.conns,
        warmup=args.warmup,
        duration=args.duration,
        timeout=5.0,
        client="raw" if scenario == "handshake" else args.client,
        cpus=args.client_cpus,
    )
    load = Load(spec).start()
    try:
        load.wait("ready", 60)
        t0 = time.time() + 0.3
        load.go(t0)
        time.sleep(max(0.0, t0 + args.warmup - time.time()))
        cpu0, w0 = tree_cpu_seconds(server.pid), time.monotonic()
        time.sleep(max(0.0, t0 + args.warmup + args.duration - time.time()))
        cpu1, w1 = tree_cpu_seconds(server.pid), time.monotonic()
        results = load.wait("result", args.warmup + args.duration + 40)
    finally:
        load.stop()
    out = merge(results, 1)  # client CPU as % of one core
    out["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / max(1e-9, w1 - w0)
    # Server CPU per operation, counted over the same window: steady across worker counts when
    # the workers add no overhead, whatever else runs on the machine.
    done = out["rate"] * (w1 - w0)
    out["server_us"] = 1e6 * (cpu1 - cpu0) / done if done else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(
        f"# wsserver prefork scaling: {os.cpu_count()} CPUs; server on CPUs {args.server_cpus or 'all'} "
        f"({cores(args.server_cpus)} cores), client on CPUs {args.client_cpus or 'all'} "
        f"({cores(args.client_cpus)} cores); {args.conns} echo connections x {args.window} in flight, "
        f"{args.size} B; {args.hs_loops} handshake loops; {args.duration:.0f} s measured"
    )
    print(
        "# srv% / cli%: CPU as % of one core (server = master + workers); µs/msg, µs/hs: server CPU per "
        "operation. Load average before: " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    header = (
        f"{'mode':<10} {'workers':>7} {'msgs/s':>9} {'ratio':>6} {'srv%':>5} {'µs/msg':>6} {'cli%':>5}  "
        f"{'hs/s':>7} {'ratio':>6} {'srv%':>5} {'µs/hs':>6} {'cli%':>5}  errors"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="wsserver-prefork-bench-") as tmp:
        for mode in modes:
            base: dict[str, float] = {}
            for workers in counts:
                server = Server(workers, mode == "reuse_port", args.server_cpus, Path(tmp))
                try:
                    server.wait_ready()
                    echo = measure(server, args, "echo")
                    hs = measure(server, args, "handshake")
                except Exception as exc:
                    print(f"{mode:<10} {workers:>7} failed: {exc}")
                    continue
                finally:
                    server.stop()
                base.setdefault("echo", echo["rate"])
                base.setdefault("hs", hs["rate"])
                errors = echo["errors"] + hs["errors"]
                print(
                    f"{mode:<10} {workers:>7} {echo['rate']:>9.0f} {echo['rate'] / base['echo']:>5.2f}x "
                    f"{echo['server_cpu_pct']:>5.0f} {echo['server_us']:>6.1f} {echo['client_cpu_pct'] or 0:>5.0f}  "
                    f"{hs['rate']:>7.0f} {hs['rate'] / base['hs']:>5.2f}x "
                    f"{hs['server_cpu_pct']:>5.0f} {hs['server_us']:>6.0f} {hs['client_cpu_pct'] or 0:>5.0f}  "
                    f"{errors}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
