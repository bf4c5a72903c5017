"""The scenarios of issue #10 and how one repeat of each is run and measured."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from bench.loadgen.driver import Load, LoadSpec, merge
from bench.procfs import cpus_busy_seconds, tree_cpu_seconds, tree_rss_kib
from bench.servers import Server


@dataclass(frozen=True)
class Scenario:
    key: str
    number: int
    title: str
    kind: str  # echo | handshake | idle | storm
    conns: int
    window: int = 1
    size: int = 32
    binary: bool = False
    tls: bool = False
    compression: bool = False
    figure: str = "rate"  # the headline figure's key in a result
    unit: str = "msg/s"
    higher_is_better: bool = True
    per: str = "msg"  # server CPU µs per ...


def scenarios(full: bool) -> dict[str, Scenario]:
    idle_conns = 10_000 if full else 2_000
    storm_conns = 5_000 if full else 1_000
    items = [
        Scenario("rr", 1, "request/response echo, 32 B text, 64 connections", "echo", 64),
        Scenario(
            "stream", 2, "streaming echo, 32 B text, 16 connections x 100 in flight", "echo", 16, window=100
        ),
        Scenario(
            "big",
            3,
            "64 KiB binary echo, 8 connections",
            "echo",
            8,
            size=65536,
            binary=True,
            figure="mib_s",
            unit="MiB/s",
        ),
        Scenario(
            "handshake",
            4,
            "connect + handshake + one echo + close, 16 at a time",
            "handshake",
            16,
            unit="hs/s",
            per="hs",
        ),
        Scenario(
            "idle",
            5,
            f"{idle_conns} idle connections, no compression",
            "idle",
            idle_conns,
            figure="kib_per_conn",
            unit="KiB/conn",
            higher_is_better=False,
            per="conn",
        ),
        Scenario(
            "idle-deflate",
            5,
            f"{idle_conns} idle connections, permessage-deflate offered",
            "idle",
            idle_conns,
            compression=True,
            figure="kib_per_conn",
            unit="KiB/conn",
            higher_is_better=False,
            per="conn",
        ),
        Scenario("wss-rr", 6, "wss request/response echo, 32 B text, 64 connections", "echo", 64, tls=True),
        Scenario(
            "wss-handshake",
            6,
            "wss connect + TLS + handshake + one echo + close, 16 at a time",
            "handshake",
            16,
            tls=True,
            unit="hs/s",
            per="hs",
        ),
        Scenario(
            "storm",
            7,
            f"reconnect storm: {storm_conns} clients connect at once",
            "storm",
            storm_conns,
            figure="time_to_all",
            unit="s to all",
            higher_is_better=False,
            per="conn",
        ),
    ]
    return {s.key: s for s in items}


@dataclass
class Settings:
    warmup: float
    duration: float
    client: str
    client_cpus: str
    client_procs: int
    python: str
    bulk_procs: int = 4  # processes for idle and storm clients
    handshake_client: str = "raw"  # measured cheapest per connection (see docs/benchmarks.md)
    storm_timeout: float = 60.0


def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        time.sleep(delay)


def _cores(cpus: str) -> int:
    if not cpus:
        return os.cpu_count() or 1
    n = 0
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def _cpu_list(cpus: str) -> list[int]:
    out: list[int] = []
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def run_timed(server: Server, sc: Scenario, st: Settings, conns: int | None = None) -> dict:
    """Echo or handshake load for warmup + duration; server CPU sampled at the window's edges."""
    spec = LoadSpec(
        scenario=sc.kind,
        url=server.url,
        conns=conns or sc.conns,
        procs=st.client_procs,
        window=sc.window,
        size=sc.size,
        binary=sc.binary,
        warmup=st.warmup,
        duration=st.duration,
        client=st.handshake_client if sc.kind == "handshake" else st.client,
        cpus=st.client_cpus,
        python=st.python,
        timeout=5.0,
    )
    load = Load(spec).start()
    try:
        ready = load.wait("ready", 90)
        connect_errors = sum(r["errors"] for r in ready)
        t0 = time.time() + 0.3
        load.go(t0)
        server_cpus = _cpu_list(server.spec.cpus) if server.spec.cpus else []
        _sleep_until(t0 + st.warmup)
        cpu0, w0 = tree_cpu_seconds(server.pid), time.monotonic()
        core0 = cpus_busy_seconds(server_cpus) if server_cpus else 0.0
        _sleep_until(t0 + st.warmup + st.duration)
        cpu1, w1 = tree_cpu_seconds(server.pid), time.monotonic()
        core1 = cpus_busy_seconds(server_cpus) if server_cpus else 0.0
        results = load.wait("result", st.warmup + st.duration + 40)
    finally:
        load.stop()
    out = merge(results, _cores(st.client_cpus))
    out["connect_errors"] = connect_errors
    out["server_cpu_s"] = cpu1 - cpu0
    out["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / max(1e-9, w1 - w0)
    # Share of the server's own CPUs it used (the saturation figure; = server_cpu_pct when pinned to one).
    out["server_core_pct"] = out["server_cpu_pct"] / max(1, len(server_cpus) or 1)
    if server_cpus and set(server_cpus).isdisjoint(_cpu_list(st.client_cpus) if st.client_cpus else []):
        # What other processes took of the server's own core(s) in the window: the noise indicator.
        foreign = (core1 - core0) - (cpu1 - cpu0)
        out["foreign_pct"] = max(0.0, 100.0 * foreign / max(1e-9, w1 - w0) / len(server_cpus))
    out["server_us"] = 1e6 * (cpu1 - cpu0) / out["count"] if out["count"] else None
    out["mib_s"] = out["bytes_per_s"] / 2**20
    if not out["count"]:
        raise RuntimeError(
            f"no {sc.per} completed (errors: {out['errors']}, connect errors: {connect_errors})"
        )
    return out


def _idle_load(server: Server, sc: Scenario, st: Settings, conns: int, procs: int) -> tuple[Load, list[dict]]:
    spec = LoadSpec(
        scenario="idle",
        url=server.url,
        conns=conns,
        procs=procs,
        compression=sc.compression,
        cpus=st.client_cpus,
        python=st.python,
        spread_sources=True,
        timeout=30.0,
        extra=["--hold", "600"],
    )
    load = Load(spec).start()
    try:
        return load, load.wait("ready", 300)
    except BaseException:
        load.stop()
        raise


def run_idle(server: Server, sc: Scenario, st: Settings, conns: int | None = None) -> dict:
    """Server RSS growth per idle connection (each did a handshake and one echo), after a warm-up batch."""
    warm, _ = _idle_load(server, sc, st, 100, 1)
    warm.send("close")
    warm.wait("result", 30)
    warm.stop()
    time.sleep(0.5)
    rss0 = tree_rss_kib(server.pid)
    cpu0 = tree_cpu_seconds(server.pid)
    load, ready = _idle_load(server, sc, st, conns or sc.conns, st.bulk_procs)
    try:
        cpu1 = tree_cpu_seconds(server.pid)
        time.sleep(1.0)
        rss1 = tree_rss_kib(server.pid)
        load.send("close")
        load.wait("result", 60)
    finally:
        load.stop()
    ok = sum(r["ok"] for r in ready)
    if not ok:
        raise RuntimeError("no idle connection could be opened")
    return {
        "count": ok,
        "errors": sum(r["errors"] for r in ready),
        "deflate_negotiated": sum(r.get("deflate_negotiated", 0) for r in ready),
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "kib_per_conn": (rss1 - rss0) / ok,
        "server_us": 1e6 * (cpu1 - cpu0) / ok,
    }


def run_storm(server: Server, sc: Scenario, st: Settings, conns: int | None = None) -> dict:
    """All clients connect at one instant; time until every one has had its handshake and echo."""
    spec = LoadSpec(
        scenario="storm",
        url=server.url,
        conns=conns or sc.conns,
        procs=st.bulk_procs,
        cpus=st.client_cpus,
        python=st.python,
        spread_sources=True,
        timeout=st.storm_timeout,
    )
    load = Load(spec).start()
    try:
        load.wait("ready", 60)
        t0 = time.time() + 0.5
        load.go(t0)
        _sleep_until(t0)
        cpu0 = tree_cpu_seconds(server.pid)
        results = load.wait("result", st.storm_timeout + 60)
        cpu1 = tree_cpu_seconds(server.pid)
    finally:
        load.stop()
    out = merge(results, _cores(st.client_cpus))
    out["served"] = out["count"]
    out["server_us"] = 1e6 * (cpu1 - cpu0) / out["count"] if out["count"] else None
    if out.get("time_to_all") is None or out["errors"]:
        out["time_to_all"] = out.get("time_to_all")  # errors are shown beside it
    return out


RUNNERS = {"echo": run_timed, "handshake": run_timed, "idle": run_idle, "storm": run_storm}
