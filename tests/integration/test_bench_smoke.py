"""The benchmark harness end to end, tiny: scenario 1 against wsserver only, a few seconds.

It checks that the harness starts the server, drives the load generator and writes JSON with
positive figures; it asserts nothing about speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_bench_harness_runs_scenario_1_against_wsserver(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--servers",
            "wsserver",
            "--scenarios",
            "rr",
            "--repeats",
            "1",
            "--warmup",
            "0.5",
            "--duration",
            "1.5",
            "--conns",
            "4",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "request/response echo" in proc.stdout  # the table was printed
    doc = json.loads((out / "latest.json").read_text())
    slot = doc["results"]["rr"]["wsserver"]
    assert slot["na"] is None, slot
    assert len(slot["runs"]) == 1
    run = slot["runs"][0]
    assert run["count"] > 0
    assert run["rate"] > 0
    assert run["server_us"] > 0
    assert run["server_cpu_s"] > 0
    assert run["client_cpu_pct"] is not None and run["client_cpu_pct"] >= 0
    assert run["p50_us"] > 0 and run["p99_us"] >= run["p50_us"]
    assert run["errors"] == 0 and run["connect_errors"] == 0
    assert run["server_core_pct"] > 0  # the saturation figure
    assert "foreign_pct" in run  # the noise figure (server and client pinned apart)
    assert doc["noise"]["preflight"]["busy_pct"] is not None
    assert doc["noise"]["noisy"] in (True, False)
    assert "## Targets" in proc.stdout
    assert (out / "latest.md").read_text().startswith("# wsserver benchmark")


def test_fanout_bench_delivers_everything_in_both_cases(tmp_path: Path) -> None:
    """bench/fanout.py, tiny: 50 subscribers over 2 nodes on a real redis-server, and the single host."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/system-deps.sh)")
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "fanout.py"),
            "--subscribers",
            "50",
            "--nodes",
            "2",
            "--workers",
            "1",
            "--rate",
            "20",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| cluster ÷ single |" in proc.stdout  # the table, with its ratio column
    assert "| lost (missing deliveries) | 0 (0.000%) | 0 (0.000%) |" in proc.stdout
    doc = json.loads((out / "latest-fanout.json").read_text())
    assert doc["failures"] == {}
    for case in ("cluster", "single"):
        run = doc["results"][case]
        assert run["subscribers"] == 50 and run["join_errors"] == 0
        assert run["published"] == 20
        assert run["expected"] == 50 * 20
        assert run["delivered"] == run["expected"] and run["missing"] == 0
        assert run["duplicates"] == 0 and run["lost_connections"] == 0 and run["publish_errors"] == 0
        assert run["p50_ms"] > 0 and run["p99_ms"] >= run["p50_ms"]
        assert run["wsserver_cpu_s"] >= 0 and run["rate"] > 0
    assert doc["results"]["cluster"]["redis_us"] is not None
