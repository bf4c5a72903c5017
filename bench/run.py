#!/usr/bin/env python3
"""wsserver's benchmark harness: wsserver and its peers, the scenarios of issue #10, in one run.

    python bench/run.py                 # quick (make bench): scenarios 1-6a, one repeat, about 5 min
    python bench/run.py --full          # everything (make bench-full): 1-8, repeats, ceiling, profile
    python bench/run.py --servers wsserver,aiohttp --scenarios rr,handshake --repeats 3

Each server is started pinned to CPU 0 (``taskset``), the load generator to CPU 1; the harness itself sits
on the client's CPU. Figures: the scenario's headline (msgs/s, MiB/s, handshakes/s, KiB per idle
connection, seconds), its spread over repeats, the server's CPU µs per message (utime + stime of the server
and its children from /proc over the measured window, divided by the messages in it), the server's and the
client's CPU, and wsserver ÷ peer for every row. A timed row whose server used less than 95 % of its core
is "not saturated" and its µs/msg enters no ratio and no target verdict. Before the run the harness samples
how busy the server's core is; after it, a median of more than 5 % taken by other processes marks the run
noisy (and --write-results then refuses to write bench/RESULTS.md without --force-write). Results go to
``bench/results/`` as JSON and markdown; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.procfs import cpus_busy_seconds  # noqa: E402
from bench.scenarios import RUNNERS, Scenario, Settings, _cores, scenarios  # noqa: E402
from bench.servers import ALL_KINDS, NotAvailable, Server, ServerSpec  # noqa: E402

QUICK_SCENARIOS = ("rr", "stream", "big", "handshake", "idle", "idle-deflate", "wss-rr")
FULL_SCENARIOS = (
    "rr",
    "stream",
    "big",
    "handshake",
    "idle",
    "idle-deflate",
    "wss-rr",
    "wss-handshake",
    "storm",
    "variants",
    "ceiling",
)
DATA_GROUP = ("rr", "stream", "big", "handshake")
WSS_GROUP = ("wss-rr", "wss-handshake")
FRESH_GROUP = ("idle", "idle-deflate", "storm")  # each on a freshly started server
VARIANT_SCENARIOS = ("rr", "stream", "handshake")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="every scenario, 3 repeats, ceiling and profile")
    p.add_argument("--servers", default=",".join(ALL_KINDS), help=f"comma list of {', '.join(ALL_KINDS)}")
    p.add_argument("--scenarios", default="", help="comma list of " + ", ".join(FULL_SCENARIOS))
    p.add_argument("--repeats", type=int, default=0, help="repeats of scenarios 1-4 and 6 (quick 1, full 3)")
    p.add_argument(
        "--bulk-repeats", type=int, default=0, help="repeats of scenarios 5 and 7 (quick 1, full 2)"
    )
    p.add_argument("--warmup", type=float, default=0.0, help="seconds before measuring (quick 0.5, full 1)")
    p.add_argument("--duration", type=float, default=0.0, help="measured seconds (quick 2, full 5)")
    p.add_argument("--conns", type=int, default=0, help="override the connection count of every scenario")
    p.add_argument(
        "--client",
        choices=("picows", "websockets"),
        default="",
        help="load generator client (default picows, websockets where picows is missing)",
    )
    p.add_argument("--client-procs", type=int, default=1, help="loadgen processes for scenarios 1-4, 6")
    p.add_argument("--bulk-procs", type=int, default=4, help="loadgen processes for scenarios 5 and 7")
    p.add_argument("--server-cpus", default="0", help="taskset list for servers ('' = no pinning)")
    p.add_argument("--client-cpus", default="1", help="taskset list for the load generator")
    p.add_argument("--profile", action="store_true", help="py-spy the wsserver hot path under scenario 1")
    p.add_argument("--profile-seconds", type=float, default=8.0)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument(
        "--write-results",
        action="store_true",
        help="also write the report to bench/RESULTS.md (the committed copy of a full run); "
        "refused when the run is noisy",
    )
    p.add_argument(
        "--force-write",
        action="store_true",
        help="with --write-results: write bench/RESULTS.md even from a noisy run (marked noisy)",
    )
    p.add_argument("--python", default=sys.executable, help="interpreter for servers and load generator")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------- context


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cmd(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(args: argparse.Namespace) -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    node_ws = REPO / "bench" / "peers" / "node" / "node_modules" / "ws" / "package.json"
    versions = {
        d: _version(d)
        for d in (
            "wsserver",
            "gevent",
            "greenlet",
            "wsproto",
            "h11",
            "websockets",
            "aiohttp",
            "tornado",
            "picows",
            "uvicorn",
            "uvloop",
            "pyOpenSSL",
        )
    }
    versions["python"] = platform.python_version()
    versions["node"] = _cmd(["node", "--version"]) or "not installed"
    versions["ws (node)"] = (
        json.loads(node_ws.read_text())["version"] if node_ws.exists() else "not installed"
    )
    wsserver_dir = REPO / "wsserver" / "__init__.py"
    if versions["wsserver"] == "not installed" and wsserver_dir.exists():
        for line in wsserver_dir.read_text().splitlines():
            if line.startswith("__version__"):
                versions["wsserver"] = line.split("=", 1)[1].strip().strip("\"'") + " (source tree)"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(),
            "somaxconn": _cmd(["cat", "/proc/sys/net/core/somaxconn"]),
        },
        "git": _cmd(["git", "rev-parse", "--short", "HEAD"]) or "no commit",
        "versions": versions,
        "loadavg_start": os.getloadavg(),
    }


# --------------------------------------------------------------------------------------------- running


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.full = args.full
        self.scs = scenarios(self.full)
        self.out = Path(args.out)
        self.stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.workdir = self.out / f"run-{self.stamp}"
        self.selected = [
            s
            for s in (
                args.scenarios.split(",")
                if args.scenarios
                else (FULL_SCENARIOS if self.full else QUICK_SCENARIOS)
            )
            if s
        ]
        unknown = set(self.selected) - set(FULL_SCENARIOS)
        if unknown:
            raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
        self.kinds = [k for k in args.servers.split(",") if k]
        unknown = set(self.kinds) - set(ALL_KINDS)
        if unknown:
            raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))}")
        self.repeats = args.repeats or (3 if self.full else 1)
        self.bulk_repeats = args.bulk_repeats or (2 if self.full else 1)
        client = args.client
        if not client:
            try:
                import picows  # noqa: F401

                client = "picows"
            except ImportError:
                client = "websockets"
        self.settings = Settings(
            warmup=args.warmup or (1.0 if self.full else 0.5),
            duration=args.duration or (5.0 if self.full else 2.0),
            client=client,
            client_cpus=args.client_cpus,
            client_procs=args.client_procs,
            python=args.python,
            bulk_procs=args.bulk_procs,
        )
        self.records: dict[str, dict[str, dict]] = {}
        self.bases: dict[str, dict[str, str]] = {}
        self.extra_scenarios: dict[str, Scenario] = {}
        self.notes: list[str] = []
        self.no_metrics_table: set[str] = set()
        self.cert = self.key = None
        self.profile_text = ""
        self.preflight: dict = {}

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def slot(self, key: str, name: str) -> dict:
        return self.records.setdefault(key, {}).setdefault(name, {"runs": [], "na": None, "failures": []})

    def run_group(
        self,
        spec: ServerSpec,
        keys: list[str],
        tag: str,
        settings: Settings | None = None,
        record_as: dict[str, str] | None = None,
    ) -> None:
        """Start one server, run ``keys`` on it in order, stop it."""
        settings = settings or self.settings
        record_as = record_as or {}
        workdir = self.workdir / tag
        if spec.metrics is False and spec.name in self.no_metrics_table:
            spec = spec.but(metrics=None, label=spec.name)
        try:
            server = Server(spec, workdir, self.cert, self.key, python=self.args.python).start()
        except NotAvailable as exc:
            if spec.metrics is False:  # no [metrics] table yet: "off" is the server without one
                self.no_metrics_table.add(spec.name)
                note = "the [metrics] table is not accepted yet: the metrics=off rows run without it"
                if note not in self.notes:
                    self.notes.append(note)
                return self.run_group(spec.but(metrics=None, label=spec.name), keys, tag, settings, record_as)
            for key in keys:
                self.slot(record_as.get(key, key), spec.name)["na"] = str(exc)
            self.log(f"{spec.name}: n/a ({exc})")
            return
        try:
            for key in keys:
                sc = self.scs[key]
                slot = self.slot(record_as.get(key, key), spec.name)
                started = time.monotonic()
                try:
                    result = RUNNERS[sc.kind](server, sc, settings, self.args.conns or None)
                except Exception as exc:
                    slot["failures"].append(f"{type(exc).__name__}: {exc}")
                    if not slot["runs"]:
                        slot["na"] = f"failed: {type(exc).__name__}: {str(exc)[:160]}"
                    self.log(f"{spec.name} {key}: FAILED {exc}")
                    traceback.print_exc(limit=3, file=sys.stderr)
                    if server.proc is None or server.proc.poll() is not None:
                        self.log(f"{spec.name}: server died: {server.log_tail()}")
                        break
                    continue
                result["loadavg"] = os.getloadavg()
                slot["runs"].append(result)
                slot["na"] = None
                head = result.get(sc.figure)
                load = ""
                if sc.kind in ("echo", "handshake"):
                    pct = result.get("server_core_pct")
                    load = (
                        f"  server CPU {report.fmt(pct, 0)}%"
                        + ("" if pct is not None and pct >= report.SATURATED_PCT else " NOT SATURATED")
                        + f"  other load {report.fmt(result.get('foreign_pct'), 0)}%"
                    )
                self.log(
                    f"{spec.name:>22} {key:<14} {sc.unit} {report.fmt(head)}  server µs/{sc.per} "
                    f"{report.fmt(result.get('server_us'))}{load}  client CPU "
                    f"{report.fmt(result.get('client_cpu_pct'), 0)}%  ({time.monotonic() - started:.1f}s)"
                )
        finally:
            server.stop()

    def run(self) -> None:
        sel = self.selected
        if any(k in sel for k in WSS_GROUP):
            from bench.tlsfiles import make_cert

            self.cert, self.key = make_cert(self.workdir / "tls")
        data = [k for k in DATA_GROUP if k in sel]
        wss = [k for k in WSS_GROUP if k in sel]
        fresh = [k for k in FRESH_GROUP if k in sel]
        cpus = self.args.server_cpus
        for r in range(self.repeats):
            order = self.kinds[r % len(self.kinds) :] + self.kinds[: r % len(self.kinds)]
            for kind in order:
                if data:
                    self.run_group(ServerSpec(kind, cpus=cpus), data, f"r{r}-{kind}")
                if wss:
                    self.run_group(ServerSpec(kind, tls=True, cpus=cpus), wss, f"r{r}-{kind}-wss")
        for r in range(self.bulk_repeats):
            order = self.kinds[r % len(self.kinds) :] + self.kinds[: r % len(self.kinds)]
            for key in fresh:
                for kind in order:
                    spec = ServerSpec(kind, compression=self.scs[key].compression, cpus=cpus)
                    self.run_group(spec, [key], f"r{r}-{kind}-{key}")
        if "variants" in sel:
            self.run_variants()
        if "ceiling" in sel:
            self.run_ceiling()
        if self.args.profile or (self.full and "rr" in sel and "wsserver" in self.kinds):
            self.run_profile()

    def run_variants(self) -> None:
        """Scenario 8: wsserver alone: workers 1/2/4, greenlet vs thread pool, metrics on vs off."""
        shared = "0-1"
        base = ServerSpec(
            "wsserver", metrics=False, label="wsserver[metrics=off]", cpus=self.args.server_cpus
        )
        one = ServerSpec("wsserver", cpus=shared, label="wsserver[workers=1,cpus=0-1]")
        variants = [
            (base, None, self.settings),
            (ServerSpec("wsserver", metrics=True, cpus=self.args.server_cpus), base.name, self.settings),
            (
                ServerSpec(
                    "wsserver",
                    pool_mode="thread",
                    metrics=False,
                    cpus=self.args.server_cpus,
                    label="wsserver[pool=thread]",
                ),
                base.name,
                self.settings,
            ),
        ]
        # Scaling on a 2-core machine: N workers and the client share both cores. The base is the
        # standard pinned single worker (client on its own core); the unpinned single worker is shown
        # too, for what unpinning alone does.
        scaling = dataclasses.replace(self.settings, client_cpus=shared)
        variants.append((one, base.name, scaling))
        for n in (2, 4):
            variants.append(
                (
                    ServerSpec("wsserver", workers=n, cpus=shared, label=f"wsserver[workers={n},cpus=0-1]"),
                    base.name,
                    scaling,
                )
            )
        for key in VARIANT_SCENARIOS:
            sc = self.scs[key]
            self.extra_scenarios[f"v-{key}"] = dataclasses.replace(
                sc, number=8, title=f"{sc.title} — variants"
            )
            self.bases[f"v-{key}"] = {spec.name: b for spec, b, _ in variants if b}
        for r in range(self.repeats):
            for spec, _, settings in variants:
                self.run_group(
                    spec,
                    list(VARIANT_SCENARIOS),
                    f"r{r}-variant-{spec.name}",
                    settings,
                    record_as={k: f"v-{k}" for k in VARIANT_SCENARIOS},
                )

    def run_ceiling(self) -> None:
        """The load generator against the fastest peer (picows server), with each client library."""
        for key in ("rr", "stream", "handshake"):
            sc = self.scs[key]
            self.extra_scenarios[f"ceiling-{key}"] = dataclasses.replace(
                sc, title=f"load generator ceiling: {sc.title}, against the picows server"
            )
        for r in range(self.repeats):
            for client in ("picows", "websockets", "raw"):
                settings = dataclasses.replace(self.settings, client=client, handshake_client=client)
                keys = ["handshake"] if client == "raw" else ["rr", "stream", "handshake"]
                self.run_group(
                    ServerSpec("picows", cpus=self.args.server_cpus, label=f"{client} client"),
                    keys,
                    f"r{r}-ceiling-{client}",
                    settings,
                    record_as={k: f"ceiling-{k}" for k in keys},
                )

    def run_profile(self) -> None:
        """py-spy (sampling, --nonblocking) on wsserver during scenarios 1-3; top functions by own time."""
        pyspy = shutil.which("py-spy") or str(Path(self.args.python).parent / "py-spy")
        if not Path(pyspy).exists():
            self.profile_text = "py-spy is not installed (pip install py-spy): no profile."
            return
        sections = []
        for key in ("rr", "stream", "big"):
            sections.append(f"### Scenario {self.scs[key].number} [{key}]\n\n{self._profile_one(pyspy, key)}")
        self.profile_text = "\n\n".join(sections)
        self.log("profile written")

    def _profile_one(self, pyspy: str, key: str) -> str:
        import threading

        sc = self.scs[key]
        seconds = self.args.profile_seconds
        settings = dataclasses.replace(self.settings, warmup=1.0, duration=seconds + 1.0)
        raw = self.workdir / f"profile-wsserver-{key}.txt"
        raw.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = Server(
                ServerSpec("wsserver", cpus=self.args.server_cpus),
                self.workdir / f"profile-{key}",
                python=self.args.python,
            ).start()
        except NotAvailable as exc:
            return f"wsserver did not start: {exc}"
        try:
            result: dict = {}
            worker = threading.Thread(target=lambda: result.update(RUNNERS["echo"](server, sc, settings)))
            worker.start()
            time.sleep(1.5)
            cmd = [
                pyspy,
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--format",
                "raw",
                "--nonblocking",
                "--subprocesses",
                "--output",
                str(raw),
            ]
            if self.args.client_cpus and shutil.which("taskset"):
                cmd = ["taskset", "-c", self.args.client_cpus, *cmd]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
            worker.join(timeout=seconds + 90)
            if proc.returncode != 0 or not raw.exists():
                return f"py-spy failed: {proc.stderr.strip()[-300:]}"
            head = (
                f"During the profile: {report.fmt(result.get(sc.figure))} {sc.unit}, "
                f"{report.fmt(result.get('server_us'))} server µs/{sc.per} (py-spy's own cost included).\n\n"
            )
            return head + top_functions(raw.read_text())
        finally:
            server.stop()


def top_functions(collapsed: str, limit: int = 18) -> str:
    """Own and inclusive share of samples per function, from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for frame in stack.split(";"):
            if frame.startswith("process ") or frame.startswith("thread "):
                continue
            name = frame.split(" (", 1)[0]
            where = frame.split(" (", 1)[1].rstrip(")") if " (" in frame else ""
            where = where.rsplit(":", 1)[0]
            short = "/".join(Path(where).parts[-2:]) if where else ""
            frames.append(f"{name} ({short})" if short else name)
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return "py-spy recorded no samples."
    lines = [
        f"{total} samples of the server and its workers (py-spy record --rate 200 --nonblocking "
        "--subprocesses; idle waits not sampled).",
        "",
        "| own % | function |",
        "|---:|---|",
    ]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"| {100 * n / total:.1f} | `{name}` |")
    lines += ["", "| inclusive % | function |", "|---:|---|"]
    for name, n in sorted(incl.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"| {100 * n / total:.1f} | `{name}` |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- report


def _figure(bench: Bench, key: str, name: str, field: str = "") -> float | None:
    slot = bench.records.get(key, {}).get(name)
    if not slot or not slot["runs"]:
        return None
    sc = bench.scs.get(key) or bench.extra_scenarios.get(key)
    return report.summarize([r.get(field or sc.figure) for r in slot["runs"]])[0]


def _saturated(bench: Bench, key: str, name: str) -> bool:
    slot = bench.records.get(key, {}).get(name)
    sc = bench.scs.get(key) or bench.extra_scenarios.get(key)
    return bool(slot and slot["runs"]) and report.is_saturated(sc, slot["runs"])


def _server_pct(bench: Bench, key: str, name: str) -> float | None:
    slot = bench.records.get(key, {}).get(name)
    return report.server_pct(slot["runs"]) if slot and slot["runs"] else None


def noise_median(bench: Bench) -> tuple[float | None, float | None, int]:
    """Median and max of the other processes' share of the server's core over all measured windows."""
    values = sorted(
        r["foreign_pct"]
        for slots in bench.records.values()
        for slot in slots.values()
        for r in slot["runs"]
        if r.get("foreign_pct") is not None
    )
    if not values:
        return None, None, 0
    return values[len(values) // 2], values[-1], len(values)


def is_noisy(bench: Bench) -> bool:
    mid, _, _ = noise_median(bench)
    return mid is not None and mid > report.NOISE_PCT


# (scenario, peer, limit on wsserver ÷ peer of server CPU µs per message, peers only shown)
CPU_TARGETS = (
    ("rr", "aiohttp", 0.8, ()),
    ("stream", "aiohttp", 1.0, ()),
    ("wss-rr", "aiohttp", 1.0, ()),
    ("handshake", "aiohttp", 1.0, ()),
    ("big", "websockets", 1.0, ("aiohttp",)),
)
MEMORY_TARGETS = (("idle", 4.0), ("idle-deflate", 40.0))


def targets(bench: Bench) -> list[str]:
    """The targets (wsserver: one worker, greenlet mode, compression off), each met, missed, inconclusive
    (a row not saturated, or the run noisy) or not run, with the figures it was judged on."""
    noisy = is_noisy(bench)
    mid, _, _ = noise_median(bench)

    def row(label: str, verdict: str, detail: str) -> str:
        return f"| {label} | {verdict} | {detail} |"

    def side(key: str, name: str) -> str:
        us, pct = _figure(bench, key, name, "server_us"), _server_pct(bench, key, name)
        sat = "" if _saturated(bench, key, name) else ", not saturated"
        return f"{name} {report.fmt(us)} µs (server CPU {report.fmt(pct, 0)}%{sat})"

    rows = ["| target | verdict | figures |", "|---|---|---|"]
    for key, peer, limit, shown in CPU_TARGETS:
        sc = bench.scs[key]
        label = f"{key}: server µs/{sc.per} wsserver ÷ {peer} ≤ {limit:.1f}x"
        if key not in bench.records:
            rows.append(row(label, "not run", f"scenario {key} was not selected"))
            continue
        a, b = _figure(bench, key, "wsserver", "server_us"), _figure(bench, key, peer, "server_us")
        if a is None or b is None:
            missing = [n for n, v in (("wsserver", a), (peer, b)) if v is None]
            reasons = [
                f"{n}: {report.clean_reason(bench.records[key].get(n, {}).get('na') or 'not run', 120)}"
                for n in missing
            ]
            rows.append(row(label, "inconclusive (no figure)", "; ".join(reasons)))
            continue
        detail = f"{side(key, 'wsserver')} ÷ {side(key, peer)} = {a / b:.2f}x (limit {limit:.2f}x)"
        for other in shown:
            c = _figure(bench, key, other, "server_us")
            if c is not None:
                sat = (
                    ""
                    if _saturated(bench, key, other) and _saturated(bench, key, "wsserver")
                    else "; not saturated, for the record only"
                )
                detail += f"; ÷ {other} {report.fmt(c)} µs = {a / c:.2f}x{sat}"
        unsaturated = [n for n in ("wsserver", peer) if not _saturated(bench, key, n)]
        if unsaturated:
            verdict = f"inconclusive (not saturated: {', '.join(unsaturated)})"
        elif noisy:
            verdict = f"inconclusive (noisy run: other load {mid:.0f}% of the server's core)"
        else:
            verdict = "met" if a / b <= limit else "**missed**"
        rows.append(row(label, verdict, detail))
    for key, limit in MEMORY_TARGETS:
        label = f"{key}: ≤ {limit:g} KiB of server RSS per connection"
        if key not in bench.records:
            rows.append(row(label, "not run", f"scenario {key} was not selected"))
            continue
        a = _figure(bench, key, "wsserver")
        if a is None:
            na = bench.records[key].get("wsserver", {}).get("na") or "not run"
            rows.append(row(label, "inconclusive (no figure)", f"wsserver: {report.clean_reason(na, 120)}"))
            continue
        rows.append(
            row(
                label,
                "met" if a <= limit else "**missed**",
                f"wsserver {report.fmt(a)} KiB per connection ({bench.scs[key].conns} connections; "
                "memory, so neither saturation nor noise applies)",
            )
        )
    return rows


def other_checks(bench: Bench) -> list[str]:
    """Checks from full runs that are not targets: worker scaling and the reconnect storm."""
    rows = []
    for key in ("v-rr", "v-handshake"):
        a = _figure(bench, key, "wsserver[workers=2,cpus=0-1]")
        b = _figure(bench, key, "wsserver[metrics=off]")
        if a is None or b is None:
            continue
        noise = _figure(bench, key, "wsserver[metrics=off]", "foreign_pct")
        noisy = (noise or 0) > report.NOISE_PCT
        verdict = "inconclusive (noisy)" if noisy else ("met" if a >= 1.6 * b else "**missed**")
        rows.append(
            f"| 2 workers ≥ 1.6 x 1 worker ({key[2:]}) | {verdict} | {report.fmt(a)} vs {report.fmt(b)} "
            f"({report.ratio(a, b)}); 2 workers share both cores with the client"
            + (f"; other load took {noise:.0f}% of the 1-worker base's core" if noisy else "")
            + " |"
        )
    slot = bench.records.get("storm", {}).get("wsserver")
    if slot and slot["runs"]:
        errors = max(r["errors"] for r in slot["runs"])
        rows.append(
            f"| storm of {bench.scs['storm'].conns}: zero errors | {'met' if errors == 0 else '**missed**'} "
            f"| worst run {errors} errors, {report.fmt(_figure(bench, 'storm', 'wsserver'))} s to all |"
        )
    if not rows:
        return []
    return ["| check | verdict | figures |", "|---|---|---|", *rows]


def preflight(server_cpus: str, seconds: float = 1.0) -> dict:
    """Load average, and how busy the server's core(s) are for ``seconds`` before any server runs: all of
    that is other processes (the harness itself sits on the client's CPU)."""
    out: dict = {"loadavg": os.getloadavg(), "cpus": server_cpus, "busy_pct": None, "seconds": seconds}
    if not server_cpus:
        return out
    try:
        cpus = _expand(server_cpus)
        b0, t0 = cpus_busy_seconds(cpus), time.monotonic()
        time.sleep(seconds)
        b1, t1 = cpus_busy_seconds(cpus), time.monotonic()
    except (OSError, ValueError):
        return out
    out["busy_pct"] = max(0.0, 100.0 * (b1 - b0) / max(1e-9, t1 - t0) / len(cpus))
    return out


def preflight_lines(pre: dict) -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in pre["loadavg"])
    if pre.get("busy_pct") is None:
        return [f"before the run: load average {load}; the server's core not sampled (servers not pinned)"]
    busy = pre["busy_pct"]
    lines = [
        f"before the run: load average {load}; CPU {pre['cpus']} (the server's core) {busy:.1f}% busy "
        f"over {pre['seconds']:g} s with no server running"
    ]
    if busy > report.NOISE_PCT:
        lines.insert(
            0,
            f"NOISY: other processes took {busy:.0f}% of CPU {pre['cpus']} (the server's core; limit "
            f"{report.NOISE_PCT:g}%): rows may not saturate and the run will probably be marked noisy",
        )
    return lines


def noise_header(bench: Bench, forced: bool = False) -> list[str]:
    """The noisy-run banner for the top of the report ([] when the run is quiet or noise was not measured)."""
    if not is_noisy(bench):
        return []
    mid, top, n = noise_median(bench)
    text = (
        f"> **NOISY RUN**: other processes took a median {mid:.0f}% (max {top:.0f}%) of the server's core "
        f"over {n} measured windows, above the {report.NOISE_PCT:g}% limit. Every CPU target is "
        "inconclusive; rates are depressed and µs/msg inflated by amounts that differ from row to row. "
        "Re-run on a quiet machine."
    )
    if forced:
        text += " (Written to bench/RESULTS.md with --force-write.)"
    return [text, ""]


def foreign_line(bench: Bench) -> str:
    """How much of the server's core other processes took during the measured windows (the noise)."""
    mid, top, n = noise_median(bench)
    pre = bench.preflight
    before = ""
    if pre.get("busy_pct") is not None:
        before = (
            f" Before the run, with no server running, CPU {pre['cpus']} was {pre['busy_pct']:.1f}% busy over "
            f"{pre['seconds']:g} s."
        )
    if mid is None:
        return (
            "- Other load on the server's core: not measured (server not pinned apart from the client)."
            + before
        )
    verdict = "**noisy**" if mid > report.NOISE_PCT else "quiet"
    return (
        f"- Other load on the server's core (CPU time other processes took on it during the measured windows): "
        f"median {mid:.1f}%, max {top:.0f}% over {n} windows: {verdict} (limit {report.NOISE_PCT:g}% median); "
        f"rows above {report.NOISE_PCT:g}% say so in their notes." + before
    )


def ceiling_lines(bench: Bench) -> list[str]:
    """Each client's CPU per message against the picows server, and the rate that would fill its core."""
    out = []
    for key in ("ceiling-rr", "ceiling-stream", "ceiling-handshake"):
        for name, slot in bench.records.get(key, {}).items():
            per = report.summarize(
                [
                    r["client_cpu_seconds"] / r["count"] * 1e6
                    for r in slot["runs"]
                    if r.get("count") and r.get("client_cpu_seconds")
                ]
            )[0]
            if per:
                unit = "hs/s" if key.endswith("handshake") else "msg/s"
                cores = _cores(bench.settings.client_cpus)
                out.append(
                    f"| {key[8:]} | {name} | {report.fmt(per)} | {report.fmt(cores * 1e6 / per)} {unit} |"
                )
    if not out:
        return []
    return [
        "## Load generator ceiling",
        "",
        "Client CPU µs per message (or per connection) against the picows server, and the rate at which "
        "the client's core would be 100 % busy: the most this load generator can drive, whatever the server.",
        "",
        "| scenario | client | client µs per msg / hs | ceiling |",
        "|---|---|---:|---:|",
        *out,
        "",
    ]


def summary_table(bench: Bench) -> list[str]:
    """One row per server: the CPU-cost figures of scenarios 1-5 and 7, with wsserver ÷ that server."""
    cols = [
        ("rr", "server_us", "1 rr µs/msg"),
        ("stream", "server_us", "2 stream µs/msg"),
        ("big", "server_us", "3 64 KiB µs/msg"),
        ("handshake", "server_us", "4 µs/handshake"),
        ("idle", "", "5 KiB/idle conn"),
        ("idle-deflate", "", "5 KiB/idle conn, deflate"),
        ("storm", "", "7 storm s"),
    ]
    cols = [c for c in cols if c[0] in bench.records]
    if not cols:
        return []
    names = list(dict.fromkeys(n for key, _, _ in cols for n in bench.records[key]))
    out = [
        "## Summary (medians; in brackets wsserver ÷ that server, below 1 = wsserver cheaper; µs of a row "
        f"whose server was below {report.SATURATED_PCT:.0f}% CPU are marked and enter no ratio)",
        "",
        "| server | " + " | ".join(c[2] for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for name in names:
        cells = []
        for key, field, _ in cols:
            value = _figure(bench, key, name, field)
            base = _figure(bench, key, "wsserver", field)
            cell = report.fmt(value) if value is not None else "n/a"
            sat = _saturated(bench, key, name)
            if value is not None and not sat:
                cell += " (not saturated)" if name == "wsserver" else f" ({report.NOT_SATURATED})"
            elif value is not None and name != "wsserver" and base is not None:
                cell += (
                    f" ({report.ratio(base, value)})"
                    if _saturated(bench, key, "wsserver")
                    else f" ({report.NOT_SATURATED})"
                )
            cells.append(cell)
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*out, ""]


def markdown(bench: Bench, env: dict, forced: bool = False) -> str:
    st = bench.settings
    v = env["versions"]
    m = env["machine"]
    lines = [
        f"# wsserver benchmark — {'full' if bench.full else 'quick'} run, {env['date']}",
        "",
        *noise_header(bench, forced),
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"somaxconn {m['somaxconn']}; load average at start {', '.join(f'{x:.2f}' for x in env['loadavg_start'])},"
        f" at end {', '.join(f'{x:.2f}' for x in env['loadavg_end'])} (the machine is shared: absolute figures "
        "move with other load, ratios and CPU µs per message much less).",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + f"; git {env['git']}.",
        f"- Pinning: servers on CPU {bench.args.server_cpus or 'any'}, load generator on CPU "
        f"{st.client_cpus or 'any'} ({st.client} client for echo, {st.handshake_client} client for handshakes, "
        f"{st.client_procs} process(es) for scenarios 1-4 and 6, {st.bulk_procs} for 5 and 7). Warm-up {st.warmup:g} s, measured {st.duration:g} s, "
        f"{bench.repeats} repeat(s) of 1-4, 6, 8 and {bench.bulk_repeats} of 5, 7; median and spread "
        "(± half the range, as % of the median).",
        "- Server µs/msg: server CPU (utime+stime of the server and its children, /proc) in the measured window "
        "÷ messages echoed in it (handshakes for 4 and 6b, connections for 5 and 7). Client CPU: the load "
        "generator's own utime+stime ÷ window ÷ its cores; near 100 % the client is the limit.",
        "- Ratio columns: wsserver ÷ that row's server (for scenario 8: ÷ the variant it is compared with). "
        "For msg/s, MiB/s and hs/s above 1 is better for wsserver; for µs, KiB and seconds below 1 is.",
        "- Server CPU: the server's CPU time ÷ the window ÷ its cores (100 % = its core fully busy; below that it "
        "waited for the client or lost its core to other work on the machine). **Saturation rule**: a timed row "
        f"(echo, handshake) below {report.SATURATED_PCT:.0f}% is marked *not saturated*; its µs/msg enters no "
        f"ratio and no target verdict ({report.NOT_SATURATED}). If the client CPU of such a row is "
        f"≥ {report.CLIENT_BOUND_PCT:.0f}%, the load generator was the limit (client-bound).",
        foreign_line(bench),
        "",
    ]
    lines += summary_table(bench)
    all_scs = {**bench.scs, **bench.extra_scenarios}
    order = [
        k
        for k in (
            "rr",
            "stream",
            "big",
            "handshake",
            "idle",
            "idle-deflate",
            "wss-rr",
            "wss-handshake",
            "storm",
            "v-rr",
            "v-stream",
            "v-handshake",
            "ceiling-rr",
            "ceiling-stream",
            "ceiling-handshake",
        )
        if k in bench.records
    ]
    for key in order:
        sc = all_scs[key]
        if key.startswith("v-"):
            rows = report.scenario_rows(sc, bench.records[key], bases=bench.bases.get(key), invert=True)
            label = "variant ÷ its base"
        elif key.startswith("ceiling"):
            base = "raw client" if key == "ceiling-handshake" else "picows client"
            rows = report.scenario_rows(sc, bench.records[key], baseline=base, saturation=False)
            label = f"{base} ÷ row"
        else:
            rows = report.scenario_rows(sc, bench.records[key], client_procs=st.client_procs)
            label = "wsserver ÷ row"
        heading = (
            sc.title[0].upper() + sc.title[1:] if key.startswith("ceiling") else f"{sc.number}. {sc.title}"
        )
        lines += [f"## {heading} [{key}]", "", report.table(sc, rows, label), ""]
        for name, slot in bench.records[key].items():
            if slot["failures"] and slot["runs"]:
                lines.append(
                    f"- {name}: {len(slot['failures'])} failed repeat(s): {slot['failures'][0][:200]}"
                )
        if key.startswith("v-"):
            lines.append(
                "Bases: "
                + "; ".join(f"{a} ÷ {b}" for a, b in bench.bases.get(key, {}).items())
                + ". Rows with cpus=0-1: server and client both on CPUs 0-1; the others: server on CPU 0, client on CPU 1."
            )
            lines.append("")
    lines += ceiling_lines(bench)
    lines += [
        "## Targets (wsserver: one worker, greenlet mode, compression off)",
        "",
        f"CPU targets compare server CPU µs per message (per handshake) in the same run; a target is "
        f"inconclusive when either row is not saturated (server CPU < {report.SATURATED_PCT:.0f}%) or the "
        f"run is noisy (median other load > {report.NOISE_PCT:g}%).",
        "",
        *targets(bench),
        "",
    ]
    checks = other_checks(bench)
    if checks:
        lines += ["## Other checks", "", *checks, ""]
    if bench.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in bench.notes], ""]
    if bench.profile_text:
        lines += ["## Profile of wsserver (py-spy)", "", bench.profile_text, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    try:
        if args.client_cpus and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {int(c) for c in _expand(args.client_cpus)})
    except (OSError, ValueError):
        pass
    bench.preflight = preflight(args.server_cpus)
    for line in preflight_lines(bench.preflight):
        bench.log(line)
    env = environment(args)
    env["preflight"] = bench.preflight
    bench.log(
        f"{'full' if bench.full else 'quick'} run: servers {', '.join(bench.kinds)}; scenarios "
        f"{', '.join(bench.selected)}; client {bench.settings.client}; load average "
        f"{', '.join(f'{x:.2f}' for x in env['loadavg_start'])}"
    )
    started = time.monotonic()
    bench.workdir.mkdir(parents=True, exist_ok=True)
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.notes.append("interrupted: partial results")
    env["loadavg_end"] = os.getloadavg()
    env["seconds"] = round(time.monotonic() - started, 1)
    noisy = is_noisy(bench)
    mid, top, windows = noise_median(bench)
    write = args.write_results and (not noisy or args.force_write)
    text = markdown(bench, env, forced=write and noisy)
    doc = {
        "environment": env,
        "profile": "full" if bench.full else "quick",
        "noise": {
            "preflight": bench.preflight,
            "median_foreign_pct": mid,
            "max_foreign_pct": top,
            "windows": windows,
            "limit_pct": report.NOISE_PCT,
            "noisy": noisy,
        },
        "saturated_pct": report.SATURATED_PCT,
        "settings": dataclasses.asdict(bench.settings),
        "repeats": bench.repeats,
        "bulk_repeats": bench.bulk_repeats,
        "scenarios": {k: dataclasses.asdict(s) for k, s in {**bench.scs, **bench.extra_scenarios}.items()},
        "results": bench.records,
        "notes": bench.notes,
        "profile_top": bench.profile_text,
    }
    out = bench.out
    json_path, md_path = out / f"bench-{bench.stamp}.json", out / f"bench-{bench.stamp}.md"
    json_path.write_text(json.dumps(doc, indent=1, default=str))
    md_path.write_text(text)
    shutil.copyfile(json_path, out / "latest.json")
    shutil.copyfile(md_path, out / "latest.md")
    if write:
        (REPO / "bench" / "RESULTS.md").write_text(text)
    print(text)
    bench.log(f"done in {env['seconds']:.0f}s: {md_path} and {json_path}")
    if noisy:
        bench.log(
            f"NOISY run: other processes took a median {mid:.1f}% of the server's core "
            f"(limit {report.NOISE_PCT:g}%)"
        )
    if args.write_results and not write:
        bench.log(
            f"NOT writing bench/RESULTS.md: the run is noisy (median other load {mid:.1f}% of the server's "
            f"core > {report.NOISE_PCT:g}%); re-run on a quiet machine, or add --force-write to write it "
            "marked noisy"
        )
        return 2
    if write:
        bench.log("wrote bench/RESULTS.md" + (" (marked noisy: --force-write)" if noisy else ""))
    return 0


def _expand(cpus: str) -> list[int]:
    out: list[int] = []
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


if __name__ == "__main__":
    sys.exit(main())
