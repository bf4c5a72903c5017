#!/usr/bin/env python3
"""Fan-out across a cluster: one publisher to N subscribers over K wsserver nodes on one Redis, beside the
single-host relay, in one run.

    .venv/bin/python bench/fanout.py                      # 10 000 subscribers, 3 nodes x 1 worker, 20 msg/s, 10 s
    .venv/bin/python bench/fanout.py --subscribers 2000 --nodes 2 --workers 2 --rate 50 --duration 5

Two cases, the same load, the same endpoint (``wsserver.endpoints.pubsub:PubSub``) and the same total
number of workers:

- **cluster**: a real ``redis-server`` and K wsserver masters with ``[cluster]`` on it, W workers each;
  subscriber i connects to node i mod K, the publisher to node 0;
- **single host**: one master without ``[cluster]`` with K x W workers (the master relays between them).

The load generator (``bench/loadgen/fanout_client.py``, one process) opens the N subscribers and one
publisher, waits until every subscriber is subscribed and has received a warm-up message, then publishes
``--rate`` messages a second for ``--duration`` seconds, each stamped with the publisher's clock
(``time.monotonic_ns``); each subscriber subtracts the stamp from the same clock on arrival and counts what
it received, so the run reports delivered/expected, loss, delivered msg/s and latency p50/p99. Server CPU
per delivered message is the utime + stime of every wsserver process (and, separately, of redis-server) from
/proc between the first publish and the last delivery (or the drain timeout).

Servers and redis-server run pinned to CPU 0 (``--server-cpus``), the load generator and this script to
CPU 1 (``--client-cpus``). Other load on the server's core is measured as in ``bench/run.py`` (before the
run, and during each measured window: the core's busy time less the servers' own) and judged by its noise
rule. Every process started is stopped by its PID, also on Ctrl-C and errors. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.loadgen.common import percentile_us, proc_cpu_seconds  # noqa: E402
from bench.loadgen.driver import Load, LoadSpec, _raise_nofile  # noqa: E402
from bench.procfs import cpus_busy_seconds, tree_cpu_seconds  # noqa: E402
from bench.run import _expand, preflight, preflight_lines  # noqa: E402
from bench.servers import NotAvailable, Server, ServerSpec, free_port  # noqa: E402

GROUP = "fanout"
# Descriptors beyond the subscribers' own: the publisher, listening sockets, Redis, pipes, logs.
FD_MARGIN = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--subscribers", type=int, default=10_000, help="subscriber connections in all (default 10000)"
    )
    p.add_argument("--nodes", type=int, default=3, help="wsserver masters in the cluster case (default 3)")
    p.add_argument(
        "--workers", type=int, default=1, help="workers per node; the single host gets nodes x workers"
    )
    p.add_argument("--rate", type=float, default=20.0, help="messages published per second (default 20)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of measured publishing (default 10)")
    p.add_argument(
        "--size", type=int, default=64, help="characters of each message's data string (default 64)"
    )
    p.add_argument(
        "--warmup", type=float, default=1.0, help="least seconds of warm-up publishing (default 1)"
    )
    p.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="most seconds to wait for deliveries after the last publish (default 10)",
    )
    p.add_argument("--cases", default="cluster,single", help="comma list of cluster, single (default both)")
    p.add_argument(
        "--concurrency", type=int, default=200, help="subscribers connecting at once (default 200)"
    )
    p.add_argument(
        "--server-cpus", default="0", help="taskset list for wsserver and redis-server ('' = no pinning)"
    )
    p.add_argument("--client-cpus", default="1", help="taskset list for the load generator and this script")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="JSON and server logs go here")
    p.add_argument(
        "--python", default=sys.executable, help="interpreter for the servers and the load generator"
    )
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    if not cases or set(cases) - {"cluster", "single"}:
        p.error("--cases takes cluster, single or both")
    args.cases = cases
    for name in ("subscribers", "nodes", "workers", "size", "concurrency"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.rate <= 0 or args.duration <= 0:
        p.error("--rate and --duration must be positive")
    return args


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- processes


def fanout_toml(workers: int, port: int, broker: str | None, node: str, metrics_port: int) -> str:
    """A wsserver config with the PubSub endpoint (and /echo, which the readiness probe upgrades to)."""
    lines = [
        "[server]",
        f"workers = {workers}",
        "graceful_timeout = 2",
        'log_level = "warning"',
        "",
        # Metrics stay on, as deployed, but each server on a free port of its own: the default port
        # would be shared by the nodes of the run (and other servers on the machine).
        "[metrics]",
        "enabled = true",
        'bind = "127.0.0.1"',
        f"port = {metrics_port}",
        "",
    ]
    if broker:
        lines += ["[cluster]", f'broker = "{broker}"', f'node = "{node}"', ""]
    lines += [
        "[[endpoints]]",
        'path = "/echo"',
        'handler = "wsserver.endpoints.echo:Echo"',
        "",
        "[[endpoints]]",
        'path = "/pubsub"',
        'handler = "wsserver.endpoints.pubsub:PubSub"',
        "",
        "[[ports]]",
        'alias = "bench"',
        f"port = {port}",
        'bind = "127.0.0.1"',
        'protocol = "ws"',
        "compression = false",
        "idle_timeout_ms = 0",
        "ping_interval_ms = 0",
        "max_connections = 0",
        "backlog = 6000",
    ]
    return "\n".join(lines) + "\n"


class FanoutServer(Server):
    """A wsserver master (and its workers) serving PubSub, with or without ``[cluster]``."""

    def __init__(self, spec: ServerSpec, workdir: Path, python: str, broker: str | None, node: str) -> None:
        super().__init__(spec, workdir, python=python)
        self.broker = broker
        self.node = node

    @property
    def pubsub_url(self) -> str:
        return f"ws://{self.host}:{self.port}/pubsub"

    def command(self) -> list[str]:
        config = self.workdir / f"{self.spec.name}.toml"
        config.write_text(
            fanout_toml(self.spec.workers, self.port, self.broker, self.node, self.metrics_port)
        )
        return [self.python, "-m", "wsserver", "serve", "-c", str(config)]


class Redis:
    """redis-server on 127.0.0.1 without persistence, pinned like the servers; stopped by its PID."""

    def __init__(self, workdir: Path, cpus: str) -> None:
        self.workdir = workdir
        self.cpus = cpus
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> Redis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise NotAvailable("redis-server is not installed (scripts/system-deps.sh installs it)")
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.cpus and shutil.which("taskset"):
            cmd = ["taskset", "-c", self.cpus, *cmd]
        with open(self.workdir / "redis.log", "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_raise_nofile,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NotAvailable(
                    f"redis-server exited with {self.proc.returncode}: see {self.workdir}/redis.log"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise NotAvailable(f"redis-server did not answer PING in {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None


class FanoutLoad(Load):
    """The fan-out load generator (one process), driven through the loadgen driver's pipes and stop()."""

    def __init__(self, urls: list[str], args: argparse.Namespace) -> None:
        super().__init__(
            LoadSpec(
                scenario="fanout",
                url=urls[0],
                conns=args.subscribers,
                cpus=args.client_cpus,
                python=args.python,
            )
        )
        self.urls = urls
        self.args = args

    def start(self) -> FanoutLoad:
        import queue
        import threading

        a = self.args
        cmd = [
            a.python,
            "-m",
            "bench.loadgen.fanout_client",
            "--urls",
            ",".join(self.urls),
            "--subscribers",
            str(a.subscribers),
            "--group",
            GROUP,
            "--rate",
            str(a.rate),
            "--duration",
            str(a.duration),
            "--warmup",
            str(a.warmup),
            "--size",
            str(a.size),
            "--drain",
            str(a.drain),
            "--concurrency",
            str(a.concurrency),
        ]
        if a.client_cpus and shutil.which("taskset"):
            cmd = ["taskset", "-c", a.client_cpus, *cmd]
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
        self.procs.append(proc)
        self.lines.append(queue.Queue())
        self.stderr.append([])
        threading.Thread(target=self._pump, args=(proc.stdout, self.lines[0]), daemon=True).start()
        threading.Thread(target=self._collect, args=(proc.stderr, self.stderr[0]), daemon=True).start()
        return self

    def event(self, name: str, timeout: float) -> dict:
        return self.wait(name, timeout)[0]


# --------------------------------------------------------------------------------------------- one case


def _sample(
    servers: list[FanoutServer],
    redis: Redis | None,
    load: FanoutLoad,
    cpus: list[int],
    client_cpus: list[int],
) -> dict:
    return {
        "wsserver": sum(tree_cpu_seconds(s.pid) for s in servers),
        "redis": tree_cpu_seconds(redis.pid) if redis else 0.0,
        "core": cpus_busy_seconds(cpus) if cpus else 0.0,
        # The generator's core too: what it and this script took there (this script's own time only: the
        # servers are its children too), the rest being other processes.
        "client": sum(tree_cpu_seconds(pid) for pid in load.pids) + proc_cpu_seconds(os.getpid()),
        "client_core": cpus_busy_seconds(client_cpus) if client_cpus else 0.0,
        "t": time.monotonic(),
    }


def run_case(case: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Start the servers of ``case``, drive the load, measure, stop everything; returns the figures."""
    k, w = args.nodes, args.workers
    redis: Redis | None = None
    servers: list[FanoutServer] = []
    load: FanoutLoad | None = None
    server_cpus = _expand(args.server_cpus) if args.server_cpus else []
    client_cpus = _expand(args.client_cpus) if args.client_cpus else []
    try:
        if case == "cluster":
            redis = Redis(workdir / "redis", args.server_cpus).start()
            for i in range(k):
                spec = ServerSpec("wsserver", workers=w, cpus=args.server_cpus, label=f"node-{i}")
                servers.append(FanoutServer(spec, workdir / case, args.python, redis.url, f"fanout-{i}"))
                servers[-1].start()
        else:
            spec = ServerSpec("wsserver", workers=k * w, cpus=args.server_cpus, label="single")
            servers.append(FanoutServer(spec, workdir / case, args.python, None, "single"))
            servers[-1].start()
        log(f"{case}: {len(servers)} master(s) up" + (f", redis-server pid {redis.pid}" if redis else ""))
        load = FanoutLoad([s.pubsub_url for s in servers], args).start()
        joined = load.event("joined", 60 + args.subscribers / 50)
        log(
            f"{case}: {joined['ok']} of {args.subscribers} subscribed in {joined['seconds']:.1f}s"
            + (
                f", {joined['errors']} failed: {'; '.join(joined['first_errors'])}"
                if joined["errors"]
                else ""
            )
        )
        if not joined["ok"]:
            raise RuntimeError(f"no subscriber could join: {'; '.join(joined['first_errors'])}")
        ready = load.event("ready", args.warmup + 60)
        log(
            f"{case}: warm-up {ready['warm_seconds']:.1f}s, {ready['warm_subscribers']} of {joined['ok']} "
            "subscribers reached"
        )
        t0 = time.time() + 0.3
        load.go(t0)
        time.sleep(max(0.0, t0 - time.time()))
        s0 = _sample(servers, redis, load, server_cpus, client_cpus)
        load.event("drained", args.duration + args.drain + 60)
        s1 = _sample(servers, redis, load, server_cpus, client_cpus)
        result = load.event("result", 120)
        dead = [s.spec.name for s in servers if s.proc is None or s.proc.poll() is not None]
        if dead:
            raise RuntimeError(f"server(s) exited during the run: {', '.join(dead)}: {servers[0].log_tail()}")
    finally:
        if load is not None:
            load.send("close")
            load.stop()
        for server in servers:
            server.stop()
        if redis is not None:
            redis.stop()
    return figures(case, args, joined, ready, result, s0, s1, server_cpus, client_cpus)


def figures(
    case: str,
    args: argparse.Namespace,
    joined: dict,
    ready: dict,
    result: dict,
    s0: dict,
    s1: dict,
    server_cpus: list[int],
    client_cpus: list[int],
) -> dict:
    window = max(1e-9, s1["t"] - s0["t"])
    ws_cpu = s1["wsserver"] - s0["wsserver"]
    redis_cpu = s1["redis"] - s0["redis"]
    delivered = result["delivered"]
    hist = {int(key): v for key, v in result["latency_hist"].items()}
    out = {
        "case": case,
        "subscribers": joined["ok"],
        "join_errors": joined["errors"],
        "join_seconds": joined["seconds"],
        "warm_seconds": ready["warm_seconds"],
        "warm_subscribers": ready["warm_subscribers"],
        **{
            key: result[key]
            for key in (
                "published",
                "expected",
                "delivered",
                "missing",
                "subscribers_short",
                "duplicates",
                "disorder",
                "foreign",
                "lost_connections",
                "publish_errors",
                "first_publish_errors",
                "publish_lag",
                "delivery_seconds",
                "drain_seconds",
            )
        },
        "loss_pct": 100.0 * result["missing"] / result["expected"] if result["expected"] else None,
        # Deliveries over the publishing time, or over first publish → last delivery when that took longer
        # (the servers fell behind): rate x subscribers exactly when they kept up.
        "rate": delivered / max(result["published"] / args.rate, result["delivery_seconds"])
        if delivered
        else None,
        "p50_ms": _ms(percentile_us(hist, 0.50)),
        "p99_ms": _ms(percentile_us(hist, 0.99)),
        "max_ms": _ms(percentile_us(hist, 1.0)),
        "window": window,
        "wsserver_cpu_s": ws_cpu,
        "redis_cpu_s": redis_cpu,
        "wsserver_us": 1e6 * ws_cpu / delivered if delivered else None,
        "redis_us": 1e6 * redis_cpu / delivered if delivered and case == "cluster" else None,
        "server_us": 1e6 * (ws_cpu + redis_cpu) / delivered if delivered else None,
        # Share of the servers' own CPUs the servers (wsserver + redis) used: 100 % = their core was full.
        "server_core_pct": 100.0
        * (ws_cpu + redis_cpu)
        / window
        / max(1, len(server_cpus) or (os.cpu_count() or 1)),
        "client_cpu_s": result["cpu_seconds"],
        "client_cpu_pct": 100.0
        * result["cpu_seconds"]
        / max(1e-9, result["window"])
        / max(1, len(client_cpus) or (os.cpu_count() or 1)),
        "foreign_pct": None,
        "client_foreign_pct": None,
    }
    if server_cpus and set(server_cpus).isdisjoint(client_cpus):
        # As bench/scenarios.py: what other processes took of the servers' core(s) in the window.
        foreign = (s1["core"] - s0["core"]) - ws_cpu - redis_cpu
        out["foreign_pct"] = max(0.0, 100.0 * foreign / window / len(server_cpus))
        if client_cpus:
            foreign = (s1["client_core"] - s0["client_core"]) - (s1["client"] - s0["client"])
            out["client_foreign_pct"] = max(0.0, 100.0 * foreign / window / len(client_cpus))
    return out


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


# --------------------------------------------------------------------------------------------- report


def _ratio(a: float | None, b: float | None) -> str:
    return report.ratio(a, b)


def table(args: argparse.Namespace, results: dict[str, dict]) -> list[str]:
    k, w = args.nodes, args.workers
    names = {
        "cluster": f"cluster: {k} node(s) x {w} worker(s) + Redis",
        "single": f"single host: 1 node x {k * w} worker(s)",
    }
    cases = [c for c in ("cluster", "single") if c in results]
    both = len(cases) == 2
    head = "| | " + " | ".join(names[c] for c in cases) + (" | cluster ÷ single |" if both else " |")
    lines = [head, "|---|" + "---:|" * (len(cases) + (1 if both else 0))]

    def row(label: str, key: str, digits: int | None = None, ratio: bool = True, suffix: str = "") -> None:
        values = [results[c].get(key) for c in cases]
        cells = [report.fmt(v, digits) + suffix if v is not None else "-" for v in values]
        if both:
            cells.append(_ratio(values[0], values[1]) if ratio else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def text_row(label: str, fn) -> None:
        cells = [fn(results[c]) for c in cases]
        lines.append(f"| {label} | " + " | ".join(cells) + (" | |" if both else " |"))

    text_row(
        f"subscribers joined (of {args.subscribers})",
        lambda r: f"{r['subscribers']:,}" + (f" ({r['join_errors']} failed)" if r["join_errors"] else ""),
    )
    row("seconds to subscribe all", "join_seconds", 1)
    row("messages published", "published", 0, ratio=False)
    text_row("delivered / expected", lambda r: f"{r['delivered']:,} / {r['expected']:,}")
    text_row(
        "lost (missing deliveries)",
        lambda r: (
            f"{r['missing']:,} ({r['loss_pct']:.3f}%)"
            + (f" in {r['subscribers_short']:,} subscribers" if r["missing"] else "")
        ),
    )
    text_row("duplicates / out of order", lambda r: f"{r['duplicates']} / {r['disorder']}")
    row("delivered msg/s", "rate")
    row("latency p50, ms", "p50_ms")
    row("latency p99, ms", "p99_ms")
    row("latency max, ms", "max_ms")
    row("wsserver CPU µs per delivered msg", "wsserver_us")
    if "cluster" in results:
        row("redis-server CPU µs per delivered msg", "redis_us", ratio=False)
    row("server CPU µs per delivered msg (wsserver + redis)", "server_us")
    row("server core busy (wsserver + redis)", "server_core_pct", 0, ratio=False, suffix="%")
    row("load generator CPU", "client_cpu_pct", 0, ratio=False, suffix="%")
    row("other load on the server core", "foreign_pct", 1, ratio=False, suffix="%")
    row("other load on the generator core", "client_foreign_pct", 1, ratio=False, suffix="%")
    return lines


def notes(args: argparse.Namespace, results: dict[str, dict], pre: dict) -> list[str]:
    out = []
    for case, r in results.items():
        issues = []
        if r["missing"] or r["duplicates"] or r["lost_connections"] or r["publish_errors"] or r["foreign"]:
            issues.append(
                f"{r['missing']} missing, {r['duplicates']} duplicate deliveries, "
                f"{r['lost_connections']} subscriber connections lost, {r['publish_errors']} publish "
                f"errors {r['first_publish_errors']}, {r['foreign']} unexpected frames"
            )
        if r["missing"] and r["drain_seconds"] >= args.drain - 0.05:
            issues.append(
                f"the {args.drain:g} s drain ran out: missing deliveries may be late rather than lost "
                "(a longer --drain, or a lower --rate, tells which)"
            )
        if r["join_errors"]:
            issues.append(f"{r['join_errors']} subscriber(s) could not connect or subscribe")
        if r["warm_subscribers"] < r["subscribers"]:
            issues.append(
                f"only {r['warm_subscribers']} of {r['subscribers']} subscribers received a warm-up "
                f"message in {r['warm_seconds']:.0f}s: the measured window started anyway"
            )
        if r["server_core_pct"] >= report.SATURATED_PCT:
            issues.append(
                f"the server core was saturated ({r['server_core_pct']:.0f}%): latency includes queueing "
                "in the servers, and delivered msg/s is their capacity, not the publishing rate"
            )
        if r["client_cpu_pct"] >= report.CLIENT_BOUND_PCT:
            issues.append(
                f"the load generator was at {r['client_cpu_pct']:.0f}% of its core: latency includes its "
                "own delay in reading, msg/s may be its limit"
            )
        if r["client_foreign_pct"] is not None and r["client_foreign_pct"] > report.NOISE_PCT:
            issues.append(f"other processes took {r['client_foreign_pct']:.0f}% of the load generator's core")
        if r["publish_lag"] > 0.05:
            issues.append(f"the publisher ran up to {r['publish_lag'] * 1000:.0f} ms behind its schedule")
        if r["foreign_pct"] is not None and r["foreign_pct"] > report.NOISE_PCT:
            issues.append(f"other processes took {r['foreign_pct']:.0f}% of the server core")
        for issue in issues:
            out.append(f"- {case}: {issue}.")
    foreign = [r["foreign_pct"] for r in results.values() if r["foreign_pct"] is not None]
    if foreign:
        mid = statistics.median(foreign)
        verdict = "**NOISY**" if mid > report.NOISE_PCT else "quiet"
        out.append(
            f"- Other load on the server core during the measured windows: median {mid:.1f}% over "
            f"{len(foreign)} window(s): {verdict} (limit {report.NOISE_PCT:g}%, the rule of bench/run.py)."
        )
    out += [f"- {line}" for line in preflight_lines(pre)]
    out.append(
        f"- Publishing {args.rate:g} msg/s for {args.duration:g} s, data string of {args.size} characters; "
        "latency = the subscriber's clock on arrival in the load generator's loop - the stamp taken when "
        "the publish was written, same host clock (CLOCK_MONOTONIC). delivered msg/s = deliveries ÷ the "
        "publishing time (or first publish → last delivery, when longer): rate x subscribers when the "
        "servers keep up. Server CPU: "
        "utime + stime from /proc of every wsserver process (masters and workers) and of redis-server over "
        "the first publish → last delivery, ÷ deliveries. Ratio column: cluster ÷ single host."
    )
    return out


# --------------------------------------------------------------------------------------------- main


def raise_nofile(need: int) -> tuple[bool, int]:
    """Soft limit up to the hard one (root may raise the hard one too); False if it stays below ``need``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(hard, need), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            break
        except (ValueError, OSError):
            continue
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft >= need, soft


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The generator holds every subscriber in one process; in the single-host case one worker may get
    # most of them. Each needs a descriptor per connection.
    need = args.subscribers + FD_MARGIN
    ok, soft = raise_nofile(need)
    if not ok:
        log(
            f"RLIMIT_NOFILE is too low: the hard limit allows {soft} open files, {args.subscribers} subscribers "
            f"need at least {need} (one per connection in the load generator and in the servers). Raise the hard "
            "limit (ulimit -Hn, prlimit, /etc/security/limits.conf) or use fewer --subscribers."
        )
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        if args.client_cpus and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, set(_expand(args.client_cpus)))
    except (OSError, ValueError):
        pass
    pre = preflight(args.server_cpus)
    for line in preflight_lines(pre):
        log(line)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    workdir = out / f"fanout-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    log(
        f"fan-out: {args.subscribers} subscribers, {args.nodes} node(s) x {args.workers} worker(s), "
        f"{args.rate:g} msg/s for {args.duration:g} s, RLIMIT_NOFILE {soft}; cases {', '.join(args.cases)}; "
        f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    started = time.monotonic()
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    interrupted = False
    for case in args.cases:
        try:
            results[case] = r = run_case(case, args, workdir)
            log(
                f"{case}: delivered {r['delivered']:,}/{r['expected']:,}, {report.fmt(r['rate'])} msg/s, p50 "
                f"{report.fmt(r['p50_ms'])} ms, p99 {report.fmt(r['p99_ms'])} ms, wsserver "
                f"{report.fmt(r['wsserver_us'])} µs/msg, server core {r['server_core_pct']:.0f}%, generator "
                f"{r['client_cpu_pct']:.0f}%, other load {report.fmt(r['foreign_pct'], 1)}%"
            )
        except KeyboardInterrupt:
            interrupted = True
            log(f"{case}: interrupted; every process started was stopped")
            break
        except (NotAvailable, RuntimeError, TimeoutError, OSError) as exc:
            failures[case] = f"{type(exc).__name__}: {exc}"
            log(f"{case}: FAILED: {failures[case][:600]}")
    text = [
        f"# Fan-out: 1 publisher → {args.subscribers:,} subscribers, {args.nodes} node(s) x "
        f"{args.workers} worker(s), {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        "",
    ]
    if results:
        text += [*table(args, results), ""]
    text += [f"- {case}: failed: {report.clean_reason(reason, 400)}" for case, reason in failures.items()]
    if interrupted:
        text.append("- interrupted: partial results")
    text += notes(args, results, pre)
    print("\n".join(text), flush=True)
    doc = {
        "settings": {k: v for k, v in vars(args).items()},
        "preflight": pre,
        "results": results,
        "failures": failures,
        "interrupted": interrupted,
        "seconds": round(time.monotonic() - started, 1),
        "loadavg_end": os.getloadavg(),
    }
    path = out / f"fanout-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1, default=str))
    shutil.copyfile(path, out / "latest-fanout.json")
    log(f"done in {doc['seconds']:.0f}s: {path} (server logs in {workdir})")
    if interrupted:
        return 130
    if failures:
        return 1
    if any(r["missing"] or r["lost_connections"] or r["join_errors"] for r in results.values()):
        log(
            "LOSS: some subscribers did not receive every message, or could not subscribe (see the table and notes)"
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
