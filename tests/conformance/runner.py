"""Run Autobahn|Testsuite cases against a WebSocket echo URL and write the reports.

``python -m tests.conformance.runner --url ws://127.0.0.1:9001/echo [--cases '6.*' ...]`` runs cases
against any echo server (the pytest module starts wsserver itself).  Cases run in three phases so
that the timing-sensitive protocol cases (1 s kill timers) never share the server with the heavy
ones: 1-8 and 10, then 9.* (limits/performance), then 12.*/13.* (permessage-deflate); within a
phase a bounded number of cases runs at once, each on its own connection.

Verdicts are Autobahn's own (``Case.onConnectionLost`` of the shipped case code):
``behavior`` OK / NON-STRICT / INFORMATIONAL pass, UNIMPLEMENTED means the feature (compression)
was not negotiated, anything else fails; ``behaviorClose`` FAILED / UNCLEAN is shown as "Fail" in
Autobahn's report and counts as a failure here too (WRONG CODE and FAILED BY CLIENT do not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import convert
from .client import ClientFactory, FuzzingClientProtocol

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / ".pytest_cache" / "d" / "autobahn-conformance"
DEFAULT_OUT = REPO / "tests" / "artifacts" / "conformance"

PASS_BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL")
CLOSE_FAILURES = ("FAILED", "UNCLEAN")
PHASES = (
    ("protocol", lambda cat: cat not in ("9", "12", "13"), 8),
    ("limits", lambda cat: cat == "9", 2),
    ("compression", lambda cat: cat in ("12", "13"), 3),
)
DEFAULT_GUARD = 60.0  # seconds a case may run when it declares no WAITSECS of its own
GUARD_MARGIN = 30.0


@dataclass
class CaseResult:
    id: str
    behavior: str
    behaviorClose: str
    duration_ms: int
    remoteCloseCode: int | None = None
    remoteCloseReason: str | None = None
    localCloseCode: int | None = None
    result: str = ""
    resultClose: str = ""
    description: str = ""
    expectation: str = ""
    closedByMe: bool | None = None
    droppedByMe: bool | None = None
    failedByMe: bool | None = None
    wasClean: bool | None = None
    wasNotCleanReason: str | None = None
    reportTime: bool = False
    trafficStats: dict | None = None
    runner_error: str | None = None
    expected: dict = field(default_factory=dict)
    received: list = field(default_factory=list)
    wirelog: list = field(default_factory=list)
    agent: str | None = None

    @property
    def passed(self) -> bool:
        return self.behavior in PASS_BEHAVIORS and self.behaviorClose not in CLOSE_FAILURES

    @property
    def failed(self) -> bool:
        return not self.passed and self.behavior != "UNIMPLEMENTED"


def _short(value: Any, limit: int = 120) -> Any:
    """Payloads in expected/received as short printable text (like Autobahn's asciiLogData)."""
    if isinstance(value, str):
        text = value.encode("latin-1", "replace").decode("utf-8", "replace") if value else value
        return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} octets)"
    if isinstance(value, (bytes, bytearray)):
        return _short(bytes(value).decode("latin-1"), limit)
    if isinstance(value, (list, tuple)):
        return [_short(v, limit) for v in value]
    return value


def _plain(html: str) -> str:
    return " ".join(str(html).split("<")[0].split())


def load_cases(cache_dir: Path = DEFAULT_CACHE, install: bool = True):
    """(ordered list of (case id, case class), autobahntestsuite version)."""
    case_mod, caseset_mod = convert.load(cache_dir, install=install)
    caseset = caseset_mod.CaseSet(
        case_mod.CaseSetname,
        case_mod.CaseBasename,
        case_mod.Cases,
        case_mod.CaseCategories,
        case_mod.CaseSubCategories,
    )
    return caseset, convert.VERSION


def select(caseset, patterns: list[str], exclude: list[str] | None = None) -> list[tuple[str, type]]:
    spec: dict[str, Any] = {"cases": patterns}
    if exclude:
        spec["exclude-cases"] = exclude
    return [(cid, caseset.CasesById[cid]) for cid in caseset.parseSpecCases(spec)]


def _result_from(proto: FuzzingClientProtocol, case_id: str, case_class: type) -> CaseResult:
    case = proto.runCase
    duration = round(1000.0 * (proto.caseEnd - proto.caseStart)) if proto.caseStart else 0
    reason = proto.remoteCloseReason
    traffic = case.trafficStats.__json__() if getattr(case, "trafficStats", None) else None
    expected = {k: _short(v) for k, v in (case.expected or {}).items()}
    failing = not (case.behavior in PASS_BEHAVIORS and case.behaviorClose not in CLOSE_FAILURES)
    return CaseResult(
        id=case_id,
        behavior=case.behavior,
        behaviorClose=case.behaviorClose,
        duration_ms=duration,
        remoteCloseCode=proto.remoteCloseCode,
        remoteCloseReason=reason,
        localCloseCode=proto.localCloseCode,
        result=str(case.result),
        resultClose=str(case.resultClose),
        description=_plain(case_class.DESCRIPTION),
        expectation=_plain(case_class.EXPECTATION),
        closedByMe=proto.closedByMe,
        droppedByMe=proto.droppedByMe,
        failedByMe=proto.failedByMe,
        wasClean=proto.wasClean,
        wasNotCleanReason=proto.wasNotCleanReason,
        reportTime=bool(case.reportTime),
        trafficStats=traffic,
        runner_error=proto.runner_error,
        expected=expected,
        received=_short(case.received) if failing else [],
        wirelog=[list(e) for e in proto.wirelog] if failing or proto.runner_error else [],
        agent=proto.caseAgent,
    )


async def run_case(host: str, port: int, resource: str, case_id: str, case_class: type) -> CaseResult:
    loop = asyncio.get_running_loop()
    factory = ClientFactory(host, port, resource, f"AutobahnTestSuite/{convert.VERSION}-py3-runner")
    proto = FuzzingClientProtocol(loop, factory, case_class, case_id)
    waitsecs = getattr(proto.runCase, "WAITSECS", None)
    guard = (float(waitsecs) if waitsecs else DEFAULT_GUARD) + GUARD_MARGIN
    try:
        await asyncio.wait_for(loop.create_connection(lambda: proto, host, port), timeout=10)
    except (TimeoutError, OSError) as exc:
        return CaseResult(
            id=case_id,
            behavior="FAILED",
            behaviorClose="FAILED",
            duration_ms=0,
            description=_plain(case_class.DESCRIPTION),
            runner_error=f"cannot connect: {exc!r}",
        )
    try:
        await asyncio.wait_for(asyncio.shield(proto.done), timeout=guard)
    except TimeoutError:
        proto.runner_error = f"case still running after {guard:.0f} s (runner guard): connection dropped"
        proto.dropConnection(abort=True)
        try:
            await asyncio.wait_for(proto.done, timeout=10)
        except TimeoutError:
            return CaseResult(
                id=case_id,
                behavior="FAILED",
                behaviorClose="FAILED",
                duration_ms=int(guard * 1000),
                description=_plain(case_class.DESCRIPTION),
                runner_error=proto.runner_error,
            )
    return _result_from(proto, case_id, case_class)


async def run_cases(
    url: str,
    cases: list[tuple[str, type]],
    concurrency: dict[str, int] | None = None,
    progress=None,
    phase_times: dict[str, float] | None = None,
) -> list[CaseResult]:
    """Run ``cases`` (in Autobahn's order within each phase); ``phase_times`` gets seconds per phase."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"need a ws:// URL, got {url!r}")
    host, port = parts.hostname, parts.port or 80
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    results: dict[str, CaseResult] = {}
    for phase, member, default_limit in PHASES:
        todo = [(cid, cls) for cid, cls in cases if member(cid.split(".")[0])]
        if not todo:
            continue
        if phase == "compression":
            # largest first (12.*/13.* declare LEN octets x COUNT messages): shortest makespan, and the
            # small cases (60 s limits) end the phase among themselves
            todo.sort(key=lambda item: -getattr(item[1], "LEN", 0) * getattr(item[1], "COUNT", 1))
        limit = max(1, (concurrency or {}).get(phase, default_limit))
        sem = asyncio.Semaphore(limit)

        async def one(cid: str, cls: type, sem: asyncio.Semaphore = sem) -> None:
            async with sem:
                res = await run_case(host, port, resource, cid, cls)
                results[cid] = res
                if progress is not None:
                    progress(res)

        phase_started = time.monotonic()
        await asyncio.gather(*(one(cid, cls) for cid, cls in todo))
        if phase_times is not None:
            phase_times[phase] = round(time.monotonic() - phase_started, 1)
    return [results[cid] for cid, _cls in cases if cid in results]


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    return {
        "cases": len(results),
        "behavior": dict(Counter(r.behavior for r in results).most_common()),
        "behaviorClose": dict(Counter(r.behaviorClose for r in results).most_common()),
        "passed": sum(r.passed for r in results),
        "failed": sum(r.failed for r in results),
        "unimplemented": sum(r.behavior == "UNIMPLEMENTED" for r in results),
        "runner_errors": sum(r.runner_error is not None for r in results),
    }


def summary_line(summary: dict[str, Any]) -> str:
    beh = ", ".join(f"{k} {v}" for k, v in summary["behavior"].items())
    close = ", ".join(f"{k} {v}" for k, v in summary["behaviorClose"].items())
    return (
        f"autobahn: {summary['cases']} cases; behavior: {beh}; close: {close}; "
        f"failed {summary['failed']}, unimplemented {summary['unimplemented']}, "
        f"runner errors {summary['runner_errors']}"
    )


def write_reports(results: list[CaseResult], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    doc = {"meta": meta, "summary": summary, "cases": [asdict(r) for r in results]}
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(doc, indent=1, default=repr) + "\n")
    # Autobahn's own index.json layout (agent -> case -> verdict) for tools that read it
    agent = meta.get("agent") or "server"
    index = {
        agent: {
            r.id: {
                "behavior": r.behavior,
                "behaviorClose": r.behaviorClose,
                "remoteCloseCode": r.remoteCloseCode,
                "duration": r.duration_ms,
            }
            for r in results
        }
    }
    (out_dir / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    md = [f"# Autobahn|Testsuite conformance report: {meta.get('url', '')}", ""]
    md += [f"- {k}: {v}" for k, v in meta.items()]
    md += ["", f"**{summary_line(summary)}**", "", "| behavior | cases |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in summary["behavior"].items()]
    md += ["", "| close behavior | cases |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in summary["behaviorClose"].items()]
    bad = [r for r in results if not r.passed]
    if bad:
        md += ["", "## Not passed", ""]
        for r in bad:
            md += [
                f"### {r.id}: {r.behavior} / {r.behaviorClose}",
                "",
                f"- case: {r.description}",
                f"- expectation: {r.expectation}",
                f"- result: {r.result}",
                f"- close: {r.resultClose}",
                f"- remote close code: {r.remoteCloseCode}, closed by runner: {r.closedByMe}, "
                f"dropped by runner: {r.droppedByMe}, clean: {r.wasClean} ({r.wasNotCleanReason})",
            ]
            if r.runner_error:
                md.append(f"- runner error: {r.runner_error}")
            md.append("")
    md += [
        "",
        "## All cases",
        "",
        "| case | behavior | close behavior | duration (ms) | remote close code |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {r.id} | {r.behavior} | {r.behaviorClose} | {r.duration_ms} | {r.remoteCloseCode} |"
        for r in results
    ]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n")
    return json_path, md_path


def run(
    url: str,
    patterns: list[str],
    exclude: list[str] | None = None,
    out_dir: Path | None = DEFAULT_OUT,
    cache_dir: Path = DEFAULT_CACHE,
    concurrency: dict[str, int] | None = None,
    progress=None,
    meta: dict[str, Any] | None = None,
) -> tuple[list[CaseResult], dict[str, Any]]:
    caseset, version = load_cases(cache_dir)
    cases = select(caseset, patterns, exclude)
    started = time.time()
    phase_times: dict[str, float] = {}
    results = asyncio.run(run_cases(url, cases, concurrency, progress, phase_times))
    info = {
        "url": url,
        "autobahntestsuite": version,
        "cases selected": " ".join(patterns),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "wall time (s)": round(time.time() - started, 1),
        "phases (s)": ", ".join(f"{k} {v}" for k, v in phase_times.items()),
        "agent": next((r.agent for r in results if r.agent), None),
    }
    info.update(meta or {})
    if out_dir is not None:
        write_reports(results, out_dir, info)
    return results, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="ws:// URL of an echo endpoint")
    ap.add_argument("--cases", nargs="+", default=["*"], help="Autobahn case patterns, e.g. '6.*' 7.1.1")
    ap.add_argument("--exclude", nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--concurrency", type=int, default=None, help="cases at once in every phase")
    args = ap.parse_args(argv)
    conc = {name: args.concurrency for name, _m, _d in PHASES} if args.concurrency else None

    def progress(r: CaseResult) -> None:
        mark = "ok  " if r.passed else "FAIL" if r.failed else "----"
        print(
            f"{mark} {r.id:10} {r.behavior:13} {r.behaviorClose:16} {r.duration_ms:7d} ms "
            f"{r.runner_error or ''}",
            flush=True,
        )

    results, info = run(args.url, args.cases, args.exclude, args.out, args.cache, conc, progress)
    print(summary_line(summarize(results)))
    print(f"reports: {args.out}/report.md, report.json ({info['wall time (s)']} s)")
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
