"""wsserver against the Autobahn|Testsuite cases 1-13 (RFC 6455 + permessage-deflate); docs/conformance.md.

``test_runner_fails_a_broken_server`` first proves that the runner can fail a server (a tiny echo
server that never validates UTF-8 must fail the invalid 6.* cases); ``test_autobahn_suite`` then
runs every case against a real ``wsserver serve`` and requires zero failures.  Reports:
``tests/artifacts/conformance/report.{json,md}`` (git-ignored).  ``AUTOBAHN_CASES="6.* 7.*"``
narrows the run while debugging.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance import runner
from tests.conformance.broken_server import BrokenEchoServer
from tests.support.server import REPO, ServerProcess, free_port
from wsserver.config.schema import PortConfig, ServerConfig

pytestmark = pytest.mark.integration

ARTIFACTS = REPO / "tests" / "artifacts" / "conformance"
MiB = 1024 * 1024

# what the run needs from [[ports]]: 9.* sends messages of up to 16 MiB and the echo of one must fit
# the outbound buffer (write_limit; 1 MiB by default, when the echo of 8 MiB closes with 1013);
# no idle timeout or server pings in the middle of a case; permessage-deflate on for 12.*/13.*
PORT_SETTINGS = {
    "max_message_size": 16 * MiB,
    "write_limit": 32 * MiB,
    "compression": True,
    "idle_timeout_ms": 0,
    "ping_interval_ms": 0,
}

# the runner self-test: case -> does a server that never validates UTF-8 pass it?
SELF_TEST = {
    "1.1.1": True,
    "6.2.1": True,
    "6.2.3": True,
    "6.5.1": True,
    "6.3.1": False,
    "6.3.2": False,
    "6.4.1": False,
    "6.4.3": False,
    "6.8.1": False,
    "6.12.1": False,
}


def _toml(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def server_config(port: int) -> str:
    server = "[server]\ngraceful_timeout = 5\n"
    if "workers" in ServerConfig.__dataclass_fields__:
        server += "workers = 1\n"
    ports = "".join(
        f"{key} = {_toml(value)}\n"
        for key, value in PORT_SETTINGS.items()
        if key in PortConfig.__dataclass_fields__
    )
    return (
        f'{server}\n[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n\n'
        f'[[ports]]\nalias = "conformance"\nport = {port}\nbind = "127.0.0.1"\n{ports}'
    )


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    server = ServerProcess(tmp_path, server_config(port))
    server.start(wait_for=("127.0.0.1", port))
    try:
        yield server, f"ws://127.0.0.1:{port}/echo"
    finally:
        server.stop()


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live descendants, from /proc; 0 where unreadable."""
    total = 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _cpu_seconds(int(child))
    except (OSError, ValueError, IndexError):
        pass
    return total


def _failure_table(results: list[runner.CaseResult]) -> str:
    return "\n".join(
        f"  {r.id}: {r.behavior} / {r.behaviorClose} - {r.result} / {r.resultClose}"
        f"{' - runner error: ' + r.runner_error if r.runner_error else ''}"
        for r in results
    )


def test_runner_fails_a_broken_server(autobahn_caseset, tmp_path: Path) -> None:
    ids = autobahn_caseset.parseSpecCases({"cases": ["*"]})
    assert len(ids) == 517 and ids[0] == "1.1.1" and ids[-1] == "13.7.18"  # Autobahn's list, in its order
    cases = runner.select(autobahn_caseset, list(SELF_TEST))
    with BrokenEchoServer() as broken:
        results = asyncio.run(runner.run_cases(broken.url, cases))
    runner.write_reports(
        results, tmp_path, {"url": broken.url, "server": "tests/conformance/broken_server.py"}
    )
    verdicts = {r.id: r for r in results}
    assert set(verdicts) == set(SELF_TEST)
    assert not [r for r in results if r.runner_error], _failure_table(results)
    wrong = [r for r in results if r.passed != SELF_TEST[r.id]]
    assert not wrong, "the runner judged the broken server wrongly:\n" + _failure_table(wrong)
    for r in results:
        if not SELF_TEST[r.id]:  # it echoed invalid UTF-8: Autobahn's verdict is FAILED, not just a bad close
            assert r.behavior == "FAILED", _failure_table([r])


@pytest.mark.conformance
@pytest.mark.timeout(3600)
def test_autobahn_suite(autobahn_caseset, echo_server: tuple[ServerProcess, str], capsys) -> None:
    server, url = echo_server
    patterns = os.environ.get("AUTOBAHN_CASES", "*").split()
    cases = runner.select(autobahn_caseset, patterns)
    assert cases, f"no Autobahn case matches {patterns}"
    started = time.monotonic()
    client_cpu, server_cpu = time.process_time(), _cpu_seconds(server.proc.pid)
    phase_times: dict[str, float] = {}
    results = asyncio.run(runner.run_cases(url, cases, phase_times=phase_times))
    elapsed = time.monotonic() - started
    client_cpu, server_cpu = time.process_time() - client_cpu, _cpu_seconds(server.proc.pid) - server_cpu
    summary = runner.summarize(results)
    meta = {
        "url": url,
        "server": "wsserver serve (workers = 1, endpoint wsserver.endpoints.echo:Echo)",
        "port settings": ", ".join(f"{k} = {_toml(v)}" for k, v in PORT_SETTINGS.items()),
        "autobahntestsuite": runner.convert.VERSION,
        "cases selected": " ".join(patterns),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() - elapsed)),
        "wall time (s)": round(elapsed, 1),
        "phases (s)": ", ".join(f"{k} {v}" for k, v in phase_times.items()),
        "client CPU (s)": round(client_cpu, 1),
        "server CPU (s)": round(server_cpu, 1),
        "machine": f"{os.cpu_count()} CPUs, load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "agent": next((r.agent for r in results if r.agent), None),
    }
    _json_path, md_path = runner.write_reports(results, ARTIFACTS, meta)
    with capsys.disabled():
        print(
            f"\n{runner.summary_line(summary)} in {elapsed:.0f} s (CPU: client {client_cpu:.0f} s, "
            f"server {server_cpu:.0f} s); report: {md_path.relative_to(REPO)}"
        )
    assert len(results) == len(cases)
    errors = [r for r in results if r.runner_error]
    assert not errors, "runner errors (not verdicts on the server):\n" + _failure_table(errors)
    failed = [r for r in results if r.failed]
    assert not failed, (
        f"{len(failed)} Autobahn case(s) failed (see {md_path}):\n"
        + _failure_table(failed)
        + "\nserver log tail:\n"
        + server.logs()[-3000:]
    )
    unimplemented = [r for r in results if r.behavior == "UNIMPLEMENTED"]
    assert not unimplemented, "permessage-deflate was not negotiated:\n" + _failure_table(unimplemented)
