"""Summaries (median and spread over repeats), ratios wsserver ÷ peer, and the markdown report."""

from __future__ import annotations

import statistics

from bench.scenarios import Scenario

# A server's CPU per message is comparable only when it was CPU-bound: at least this share of its core(s)
# over the measured window. Below it, the server waited (for the client, or for a core other processes
# took) and its µs/msg is left out of every ratio and target verdict.
SATURATED_PCT = 95.0
# Other processes' share of the server's core above which a window (and, by the median, a run) is noisy.
NOISE_PCT = 5.0
# Load generator CPU (share of its cores) from which an unsaturated row is said to be client-bound.
CLIENT_BOUND_PCT = 90.0
NOT_SATURATED = "n/a (not saturated)"


def summarize(values: list[float]) -> tuple[float | None, float | None]:
    """Median and spread (half the range, as % of the median) of the repeats that produced a figure."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    med = statistics.median(values)
    if len(values) < 2 or not med:
        return med, None
    return med, 100.0 * (max(values) - min(values)) / 2 / abs(med)


def fmt(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def fmt_spread(spread: float | None) -> str:
    return "-" if spread is None else f"±{spread:.0f}%"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def _extra(sc: Scenario, runs: list[dict]) -> str:
    if sc.kind in ("echo", "handshake"):
        p50, _ = summarize([r.get("p50_us") for r in runs])
        p99, _ = summarize([r.get("p99_us") for r in runs])
        errors = sum(r.get("errors", 0) + r.get("connect_errors", 0) for r in runs)
        text = ""
        if sc.key in ("rr", "wss-rr", "handshake", "wss-handshake") and p50 is not None:
            text = f"p50 {fmt(p50 / 1000)} ms, p99 {fmt(p99 / 1000)} ms"
        foreign, _ = summarize([r.get("foreign_pct") for r in runs])
        if foreign is not None and foreign > NOISE_PCT:
            text += f"{', ' if text else ''}other load on the server's core {foreign:.0f}%"
        if errors:
            text += f"{', ' if text else ''}{errors} errors"
        return text
    if sc.kind == "idle":
        ok = min(r["count"] for r in runs)
        errors = sum(r["errors"] for r in runs)
        deflate = min(r.get("deflate_negotiated", 0) for r in runs)
        text = f"{ok} open"
        if sc.compression:
            text += ", deflate " + ("negotiated" if deflate == ok else f"on {deflate}")
        return text + (f", {errors} errors" if errors else "")
    if sc.kind == "storm":
        served = min(r["served"] for r in runs)
        errors = max(r["errors"] for r in runs)
        p50, _ = summarize([r.get("p50_us") for r in runs])
        return f"{served} served, {errors} errors (worst run), p50 {fmt((p50 or 0) / 1e6, 2)} s"
    return ""


def server_pct(runs: list[dict]) -> float | None:
    """Median share of its own CPU(s) the server used over the measured windows."""
    return summarize([r.get("server_core_pct", r.get("server_cpu_pct")) for r in runs])[0]


def is_saturated(sc: Scenario, runs: list[dict]) -> bool:
    """Timed rows (echo, handshake) count as saturated at a median ≥ SATURATED_PCT of the server's core;
    idle and storm rows measure memory and time to serve, not CPU under load, so the rule does not apply."""
    if sc.kind not in ("echo", "handshake"):
        return True
    pct = server_pct(runs)
    return pct is not None and pct >= SATURATED_PCT


def saturation_note(sc: Scenario, runs: list[dict], client_procs: int | None = None) -> str:
    """Why a timed row is not saturated ("" when it is): the server's CPU and, if the load generator was
    at its limit, that the client could not drive this server harder."""
    if is_saturated(sc, runs):
        return ""
    pct = server_pct(runs)
    text = f"**not saturated** (server CPU {'-' if pct is None else f'{pct:.0f}%'} < {SATURATED_PCT:.0f}%)"
    client, _ = summarize([r.get("client_cpu_pct") for r in runs])
    if client is not None and client >= CLIENT_BOUND_PCT:
        procs = f"{client_procs} load generator process(es)" if client_procs else "the load generator"
        text += (
            f"; client-bound: {procs} at {client:.0f}% of the client's CPU cannot saturate this "
            "server (more connections or --client-procs on more client CPUs)"
        )
    else:
        foreign, _ = summarize([r.get("foreign_pct") for r in runs])
        if foreign is None or foreign <= NOISE_PCT:
            text += (
                "; neither the client nor other load was at the limit: the messages in flight did not keep "
                "the server busy"
            )
    return text


def scenario_rows(
    sc: Scenario,
    results: dict[str, dict],
    baseline: str = "wsserver",
    bases: dict[str, str] | None = None,
    invert: bool = False,
    saturation: bool = True,
    client_procs: int | None = None,
) -> list[dict]:
    """One row per server; ``results[name] = {"runs": [...], "na": reason | None}``. Ratios are
    baseline ÷ row, or row ÷ its base (``bases``) with ``invert``. With ``saturation``, a µs ratio whose
    row or base is not saturated is ``n/a (not saturated)``."""
    rows = []
    summary = {}
    for name, res in results.items():
        runs = res["runs"]
        fig, spread = summarize([r.get(sc.figure) for r in runs])
        cpu, _ = summarize([r.get("server_us") for r in runs])
        client, _ = summarize([r.get("client_cpu_pct") for r in runs])
        saturated = (not saturation) or (bool(runs) and is_saturated(sc, runs))
        summary[name] = (fig, cpu, saturated)
        extra = _extra(sc, runs) if runs else ""
        note = saturation_note(sc, runs, client_procs) if runs and saturation else ""
        if note:
            extra = f"{note}, {extra}" if extra else note
        rows.append(
            {
                "name": name,
                "na": res.get("na") if not runs else None,
                "figure": fig,
                "spread": spread,
                "server_us": cpu,
                "client_pct": client,
                "server_pct": server_pct(runs) if runs else None,
                "saturated": saturated,
                "n": len(runs),
                "extra": extra,
            }
        )
    for row in rows:
        base = (bases or {}).get(row["name"], baseline)
        if row["name"] == base or base not in summary:
            row["ratio_fig"] = row["ratio_cpu"] = ""
            continue
        if invert:
            row["ratio_fig"] = ratio(row["figure"], summary[base][0])
            row["ratio_cpu"] = ratio(row["server_us"], summary[base][1])
        else:
            row["ratio_fig"] = ratio(summary[base][0], row["figure"])
            row["ratio_cpu"] = ratio(summary[base][1], row["server_us"])
        if not (row["saturated"] and summary[base][2]) and row["server_us"] is not None:
            row["ratio_cpu"] = NOT_SATURATED
    return rows


HEADER = (
    "| server | {unit} (median) | spread | server µs/{per} | server CPU | client CPU | {ratio}: {unit} "
    "| {ratio}: µs | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def clean_reason(reason: str, limit: int = 220) -> str:
    """One line for a markdown cell: no pipes; an (escaped) traceback shrinks to its last line."""
    lines = [x.strip() for x in reason.replace("\\n", "\n").splitlines() if x.strip()]
    if not lines:
        return ""
    text = lines[0]
    if "Traceback" in text:
        text = text.split("Traceback", 1)[0].rstrip(' "=exc') + " ... " + lines[-1]
    return text.replace("|", "/")[:limit]


def table(sc: Scenario, rows: list[dict], ratio_label: str = "wsserver ÷ row") -> str:
    out = [HEADER.format(unit=sc.unit, per=sc.per, ratio=ratio_label)]
    for row in rows:
        if row["na"]:
            out.append(f"| {row['name']} | n/a | | | | | | | {clean_reason(row['na'])} |")
            continue
        out.append(
            f"| {row['name']} | {fmt(row['figure'])} | {fmt_spread(row['spread'])} | "
            f"{fmt(row['server_us'])} | {_pct(row['server_pct'])} | {_pct(row['client_pct'])} | "
            f"{row['ratio_fig']} | {row['ratio_cpu']} | {row['extra']} |"
        )
    return "\n".join(out)
