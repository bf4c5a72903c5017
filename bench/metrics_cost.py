"""What the Prometheus instrumentation costs: wsserver with ``[metrics] enabled = true`` vs ``false``.

    .venv/bin/python bench/metrics_cost.py                 # rr, stream, handshake; 3 rounds of 4 s
    .venv/bin/python bench/metrics_cost.py --scenarios rr --rounds 5 --duration 6

Each round starts a fresh pair of servers (one worker each, pinned like every bench server,
see docs/benchmarks.md) in alternating order, and they take the load in turns, on/off then
off/on, so drift on a shared host and the bias of start order hit both alike; medians over
the rounds are compared. Printed per scenario: messages (or
handshakes) per second and server CPU µs per message with metrics on and off, and the cost as
a ratio. ``--micro`` adds the in-process cost of the hot-path statements next to what direct
prometheus-client calls would cost (multiprocess mode, in a temp dir).

Note: the per-port counting (plain ints, ``wsserver.metrics.PortStats``) runs in both servers;
``enabled = false`` removes the publication to the metric files and the scrape endpoint. The
``--micro`` figures measure the counting itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.scenarios import Settings, run_timed, scenarios  # noqa: E402
from bench.servers import Server, ServerSpec  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--scenarios", default="rr,stream,handshake", help="comma list of rr, stream, big, handshake"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--client", default="picows", choices=("picows", "websockets"))
    p.add_argument("--micro", action="store_true", help="also time the hot-path statements in-process")
    p.add_argument(
        "--aa",
        action="store_true",
        help="A/A calibration: both servers with metrics off (the noise floor of this host)",
    )
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    return p.parse_args(argv)


def micro() -> dict[str, float]:
    """µs per call: the per-message accounting vs direct multiprocess prometheus-client calls."""
    from prometheus_client import values

    from wsserver import metrics
    from wsserver.runtime.pool import PoolStats

    stats, pool = metrics.PortStats(), PoolStats()

    def per_message() -> None:  # what one echoed message adds in session.py
        stats.bytes_in += 38
        stats.messages_in += 1
        stats.messages_out += 1
        stats.bytes_out += 34

    def per_connection() -> None:  # dispatcher.py: accepted + handshake; session end
        stats.handshake_done(0.0004)
        stats.session_ended(1000, 2.5)

    def best(fn, n: int = 100_000) -> float:
        return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6

    out = {
        "counting per message (4 counters)": best(per_message),
        "pool task start, wait bucket included": best(lambda: pool.record_start(0.0)),
        "counting per connection (handshake + end)": best(per_connection, 50_000),
    }
    saved = values.ValueClass
    with tempfile.TemporaryDirectory() as path:
        metrics.setup_multiprocess(path)
        try:
            alias = f"micro{os.getpid()}"
            counter = metrics.MESSAGES_RECEIVED.labels(alias)
            hist = metrics.HANDSHAKE_DURATION.labels(alias)
            port = metrics.PortMetrics(alias)
            out["direct Counter.inc (multiprocess)"] = best(counter.inc, 50_000)
            out["direct Histogram.observe (multiprocess)"] = best(lambda: hist.observe(0.0004), 50_000)
            busy = metrics.PortStats()

            def publish() -> None:
                busy.messages_in += 100
                busy.bytes_in += 3800
                busy.messages_out += 100
                busy.bytes_out += 3400
                busy.handshake_done(0.0004)
                port.publish(busy, 10)

            out["one publication of a busy port (per second)"] = best(publish, 2_000)
        finally:
            values.ValueClass = saved
            os.environ.pop(metrics.ENV_DIR, None)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [s for s in args.scenarios.split(",") if s]
    all_scenarios = scenarios(full=False)
    settings = Settings(
        warmup=args.warmup,
        duration=args.duration,
        client=args.client,
        client_cpus=args.client_cpus,
        client_procs=1,
        python=sys.executable,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(args.out) / f"metrics-cost-{stamp}"
    results: dict[str, dict[bool, list[dict]]] = {key: {True: [], False: []} for key in chosen}
    for r in range(args.rounds):
        # Fresh servers every round, started in turns: the first-started of two identical servers
        # measured ~8 % more CPU per handshake here (an A/A test), whatever its config.
        order = (True, False) if r % 2 == 0 else (False, True)
        servers = {
            on: Server(
                ServerSpec(
                    "wsserver",
                    metrics=on and not args.aa,
                    cpus=args.server_cpus,
                    label=f"wsserver[{'on' if on else 'off'}]",
                ),
                workdir / f"round{r + 1}-{'on' if on else 'off'}",
            )
            for on in order
        }
        try:
            for on in order:
                servers[on].start()
            for key in chosen:
                for on in order:
                    res = run_timed(servers[on], all_scenarios[key], settings)
                    results[key][on].append(res)
                    print(
                        f"round {r + 1} {key:9s} metrics={'on ' if on else 'off'} "
                        f"{res['rate']:10.0f}/s  {res['server_us']:7.2f} µs",
                        flush=True,
                    )
                order = order[::-1]
        finally:
            for server in servers.values():
                server.stop()

    print()
    if args.aa:
        print("A/A calibration: both servers run with metrics off; 'on' is just the first of the pair")
    print(
        f"{'scenario':10s} {'on /s':>10s} {'off /s':>10s} {'rate on/off':>12s} "
        f"{'µs on':>8s} {'µs off':>8s} {'µs on/off':>10s}"
    )
    summary = {}
    for key in chosen:
        on_rate = statistics.median(r["rate"] for r in results[key][True])
        off_rate = statistics.median(r["rate"] for r in results[key][False])
        on_us = statistics.median(r["server_us"] for r in results[key][True])
        off_us = statistics.median(r["server_us"] for r in results[key][False])
        summary[key] = {
            "on_rate": on_rate,
            "off_rate": off_rate,
            "rate_ratio": on_rate / off_rate,
            "on_us": on_us,
            "off_us": off_us,
            "us_ratio": on_us / off_us,
            "unit": all_scenarios[key].unit,
            "per": all_scenarios[key].per,
        }
        print(
            f"{key:10s} {on_rate:10.0f} {off_rate:10.0f} {on_rate / off_rate:12.3f} "
            f"{on_us:8.2f} {off_us:8.2f} {on_us / off_us:10.3f}"
        )
    doc = {
        "args": vars(args),
        "summary": summary,
        "runs": {k: {("on" if on else "off"): v for on, v in d.items()} for k, d in results.items()},
    }
    if args.micro:
        doc["micro_us"] = micro()
        print()
        for name, us in doc["micro_us"].items():
            print(f"{name:48s} {us:8.3f} µs")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "metrics-cost.json").write_text(json.dumps(doc, indent=2))
    print(f"\nwritten: {workdir / 'metrics-cost.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
