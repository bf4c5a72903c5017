"""Metrics, health endpoints and deploy files, against a real server and a real Prometheus.

One wsserver (2 workers, a plain port and a token-auth port) is scraped every second by a
real Prometheus (session-scoped: it needs ~6 s to its first sample, ../shared/backends.md §4);
PromQL through Prometheus's HTTP API checks what clients did. promtool lints the exposition
and the alert rules; every metric name of the Grafana dashboard and the alerts must exist in a
live /metrics. Everything listens on loopback; processes are stopped by their PID.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.prefork import Client, PreforkServer, wait_until
from tests.support.rawws import http_exchange, status_of
from tests.support.server import REPO, free_port
from wsserver.metrics import names_in

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
HAPROXY = shutil.which("haproxy")
DEPLOY = REPO / "deploy"
TOKEN = "alice-token-0123456789"
N_CLIENTS, N_MESSAGES = 4, 5


# ---- Prometheus ------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> float | None:
        """The value of an instant query that gives one sample (or a scalar); None if empty."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.load(resp)
        assert doc["status"] == "success", doc
        data = doc["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        results = data["result"]
        assert len(results) <= 1, f"{expr}: {len(results)} series"
        return float(results[0]["value"][1]) if results else None

    def wait_for(self, expr: str, expected: float, timeout: float = 15.0) -> None:
        seen: list[float | None] = []

        def check() -> bool:
            seen.append(self.query(expr))
            return seen[-1] == expected

        try:
            wait_until(check, timeout, interval=0.25, what=expr)
        except TimeoutError:
            raise AssertionError(f"{expr}: expected {expected}, last values {seen[-5:]}") from None


@pytest.fixture(scope="session")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory, metrics_port) -> Prometheus:
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (make system-deps installs it)")
    workdir = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    (workdir / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: wsserver\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(port)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((workdir / "prometheus.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, 15, interval=0.1, what="prometheus ready")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


# ---- the server ------------------------------------------------------------------------------


def server_config(plain: int, secure: int, metrics: str, workers: int = 2, extra: str = "") -> str:
    return f"""
[server]
workers = {workers}
graceful_timeout = 4
log_level = "debug"
{extra}
[metrics]
{metrics}

[[users]]
name = "alice"
token = "{TOKEN}"

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[ports]]
alias = "plain"
port = {plain}
bind = "127.0.0.1"
ping_interval_ms = 0

[[ports]]
alias = "secure"
port = {secure}
bind = "127.0.0.1"
client_auth = "token"
health_path = "/lb-check"
ping_interval_ms = 0
"""


class Server:
    def __init__(self, proc: PreforkServer, plain: int, secure: int, metrics: int) -> None:
        self.proc, self.plain, self.secure, self.metrics = proc, plain, secure, metrics

    def get(self, path: str, headers: dict | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.metrics}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def scrape(self) -> str:
        status, text = self.get("/metrics")
        assert status == 200
        return text

    def total(self, name: str, **labels: str) -> float:
        """Sum of a family's samples (matching ``labels``) in a direct scrape."""
        total = 0.0
        for line in self.scrape().splitlines():
            if line.startswith((name + "{", name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    @property
    def metrics_dir(self) -> Path:
        return Path(re.search(r'msg="metrics directory" path=(\S+)', self.proc.logs())[1])


def start(
    tmp_path: Path,
    metrics_port: int,
    workers: int = 2,
    metrics_extra: str = "",
    env: dict | None = None,
    extra: str = "",
) -> Server:
    plain, secure = free_port(), free_port()
    metrics = f'bind = "127.0.0.1"\nport = {metrics_port}\n{metrics_extra}'
    proc = PreforkServer(tmp_path, server_config(plain, secure, metrics, workers, extra), env=env)
    proc.start(wait_for=("127.0.0.1", plain))
    server = Server(proc, plain, secure, metrics_port)
    wait_until(lambda: server.get("/readyz")[0] == 200, 10, what="/readyz 200")
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory, metrics_port):
    srv = start(tmp_path_factory.mktemp("metrics-server"), metrics_port)
    yield srv
    srv.proc.stop()


def echo(client: Client, text: str) -> None:
    client.send_text(text)
    assert client.recv_text() == text


# ---- the tests -------------------------------------------------------------------------------


def test_prometheus_sees_the_traffic(server, prometheus):
    prom = prometheus
    base = {
        name: server.total(name)
        for name in (
            "wsserver_messages_received_total",
            "wsserver_messages_sent_total",
            "wsserver_connections_accepted_total",
            "wsserver_health_checks_total",
            "wsserver_handshake_duration_seconds_count",
        )
    }
    base_404 = server.total("wsserver_connections_rejected_total", reason="not_found")
    base_401 = server.total("wsserver_connections_rejected_total", reason="auth_invalid")
    base_auth = server.total("wsserver_auth_attempts_total", method="token", result="invalid")

    for i in range(N_CLIENTS):
        client = Client("127.0.0.1", server.plain)
        assert client.status == 101
        for j in range(N_MESSAGES):
            echo(client, f"m{i}.{j}")
        client.close_normally()
    refused = Client("127.0.0.1", server.plain, path="/nope")
    assert refused.status == 404
    refused.close()
    wrong = Client(
        "127.0.0.1", server.secure, extra_headers="Authorization: Bearer wrong-token-0123456789\r\n"
    )
    assert wrong.status == 401  # a failed login
    wrong.close()
    good = Client("127.0.0.1", server.secure, extra_headers=f"Authorization: Bearer {TOKEN}\r\n")
    assert good.status == 101
    echo(good, "logged in")
    good.close_normally()
    assert (
        status_of(http_exchange("127.0.0.1", server.plain, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        == 200
    )

    sent = N_CLIENTS * N_MESSAGES + 1
    prom.wait_for("sum(wsserver_messages_received_total)", base["wsserver_messages_received_total"] + sent)
    prom.wait_for("sum(wsserver_messages_sent_total)", base["wsserver_messages_sent_total"] + sent)
    prom.wait_for(
        "sum(wsserver_connections_accepted_total)",
        base["wsserver_connections_accepted_total"] + N_CLIENTS + 1,
    )
    prom.wait_for(
        "sum(wsserver_handshake_duration_seconds_count)",
        base["wsserver_handshake_duration_seconds_count"] + N_CLIENTS + 1,
    )
    prom.wait_for('sum(wsserver_connections_rejected_total{reason="not_found"})', base_404 + 1)
    prom.wait_for(
        'sum(wsserver_connections_rejected_total{port="secure",reason="auth_invalid"})', base_401 + 1
    )
    prom.wait_for('sum(wsserver_auth_attempts_total{method="token",result="invalid"})', base_auth + 1)
    prom.wait_for("sum(wsserver_health_checks_total)", base["wsserver_health_checks_total"] + 1)
    prom.wait_for("sum(wsserver_connections_active)", 0)
    prom.wait_for('sum(wsserver_workers{state="ready"})', 2)
    prom.wait_for("sum(wsserver_workers_target)", 2)
    assert prom.query('sum(wsserver_close_codes_total{code="1000"})') >= N_CLIENTS + 1
    assert prom.query('sum(wsserver_bytes_received_total{port="plain"})') > N_CLIENTS * N_MESSAGES * 6
    assert prom.query('count(process_cpu_seconds_total{process="worker"})') == 2


def test_killing_a_worker_keeps_counters_and_drops_its_gauges(server, prometheus):
    prom = prometheus
    clients = [Client("127.0.0.1", server.plain) for _ in range(4)]
    for i, client in enumerate(clients):
        echo(client, f"held {i}")
    prom.wait_for("sum(wsserver_connections_active)", 4)
    received = server.total("wsserver_messages_received_total")
    prom.wait_for("sum(wsserver_messages_received_total)", received)
    restarts = prom.query("sum(wsserver_worker_restarts_total)")

    # The worker holding the most of our connections dies.
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{server.plain} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pids = [int(p) for p in re.findall(r"pid=(\d+)", out) if int(p) in server.proc.workers()]
    victim = max(set(pids), key=pids.count)
    metrics_dir = server.metrics_dir
    assert (metrics_dir / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in server.proc.workers() and len(server.proc.workers()) == 2,
        10,
        what="a replacement worker",
    )

    survivors = 0
    for i, client in enumerate(clients):
        try:
            client.sock.settimeout(2)
            echo(client, f"after {i}")
            survivors += 1
        except (OSError, ConnectionError, AssertionError):
            pass
        client.close()
    assert survivors == 4 - pids.count(victim)

    prom.wait_for("sum(wsserver_worker_restarts_total)", restarts + 1)
    # Its gauges stop counting; its counters stay in the aggregate (plus what the others got since).
    prom.wait_for("sum(wsserver_connections_active)", 0)
    prom.wait_for("sum(wsserver_messages_received_total)", received + survivors)
    time.sleep(2)  # a few more scrapes
    assert prom.query("resets(sum(wsserver_messages_received_total)[1m:1s])") == 0
    assert prom.query("resets(sum(wsserver_connections_accepted_total)[1m:1s])") == 0
    # Its files: live gauges removed, counters folded into the archive; nothing left behind.
    leftovers = sorted(p.name for p in metrics_dir.iterdir() if str(victim) in p.name)
    assert leftovers == []
    assert (metrics_dir / "counter_archive.db").exists()


def test_promtool_and_every_dashboard_and_alert_name_is_live(server):
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (make system-deps installs it)")
    text = server.scrape()
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    rules = subprocess.run(
        [PROMTOOL, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    conf = subprocess.run(
        [PROMTOOL, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert conf.returncode == 0, conf.stdout + conf.stderr

    live = names_in(text)
    used = set()
    for path in (DEPLOY / "grafana" / "wsserver-dashboard.json", DEPLOY / "prometheus" / "alerts.yml"):
        used |= set(re.findall(r"\b(?:wsserver|process)_[a-z_]+\b", path.read_text()))
    assert len(used) > 20
    missing = []
    for name in sorted(used):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in live and base not in live:
            missing.append(name)
    assert missing == [], f"names used in deploy/ but not in /metrics: {missing}"


def test_port_health_path(server):
    def get(port: int, path: str) -> bytes:
        return http_exchange("127.0.0.1", port, f"GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n".encode())

    ok = get(server.plain, "/healthz")
    assert status_of(ok) == 200 and ok.endswith(b"\r\n\r\nok\n") and b"Upgrade" not in ok
    assert status_of(http_exchange("127.0.0.1", server.plain, b"GET /healthz HTTP/1.0\r\n\r\n")) == 200
    assert status_of(get(server.secure, "/lb-check")) == 200  # the port's own health_path
    assert status_of(get(server.secure, "/healthz")) == 400  # not this port's
    assert status_of(get(server.plain, "/echo")) == 400  # a plain GET of an endpoint: no upgrade
    assert Client("127.0.0.1", server.plain, path="/healthz").status == 404  # an upgrade is routed


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_haproxy_checks_the_port_with_the_example_config(server, tmp_path):
    front, stats = free_port(), free_port()
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    text = text.replace("bind :80", f"bind 127.0.0.1:{front}").replace(
        "bind 127.0.0.1:8404", f"bind 127.0.0.1:{stats}"
    )
    text = re.sub(r"server ws1 \S+", f"server ws1 127.0.0.1:{server.plain}", text)
    text = re.sub(r"server ws2 \S+", "server ws2 127.0.0.1:1", text)  # nothing listens there
    text = text.replace("inter 2s", "inter 200ms").replace("rise 2", "rise 1")
    text = re.sub(r"maxconn \d+", "maxconn 1000", text)  # needs 2 fds per connection: stay in our limit
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    assert subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, timeout=30).returncode == 0
    log = open(tmp_path / "haproxy.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=log, stderr=subprocess.STDOUT)
    try:

        def states() -> dict[str, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{stats}/stats;csv", timeout=1) as resp:
                    rows = resp.read().decode().splitlines()
            except OSError:
                return {}
            head = rows[0].lstrip("# ").split(",")
            found = {}
            for row in rows[1:]:
                cells = dict(zip(head, row.split(","), strict=False))
                if cells.get("pxname") == "wsserver" and cells.get("svname") in ("ws1", "ws2"):
                    found[cells["svname"]] = f"{cells['status']} {cells['check_status']}"
            return found

        try:
            wait_until(
                lambda: states().get("ws1") == "UP L7OK" and states().get("ws2", "").startswith("DOWN"),
                10,
                what="ws1 UP L7OK",
            )
        except TimeoutError:
            raise AssertionError(f"{states()}: {(tmp_path / 'haproxy.log').read_text()[-2000:]}") from None
        client = Client("127.0.0.1", front)  # and a session through HAProxy
        assert client.status == 101
        echo(client, "through haproxy")
        client.close_normally()
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_readyz_auth_reload_and_draining(tmp_path):
    env = {"WSSERVER_TEST_METRICS_PASSWORD": "prom-secret-1"}
    srv = start(
        tmp_path,
        free_port(),
        workers=1,
        env=env,
        metrics_extra='user = "prom"\npassword_env = "WSSERVER_TEST_METRICS_PASSWORD"\nallow = ["127.0.0.1"]',
    )
    try:
        assert srv.get("/healthz") == (200, "ok\n")
        assert srv.get("/readyz") == (200, "ready: 1 workers\n")
        assert srv.get("/metrics")[0] == 401
        auth = {"Authorization": "Basic " + base64.b64encode(b"prom:prom-secret-1").decode()}
        status, text = srv.get("/metrics", auth)
        assert status == 200 and "wsserver_workers_target 1.0" in text

        # A reload with a broken file: counted as invalid, the server keeps running.
        srv.proc.write_config(srv.proc.config_path.read_text() + "\n[bogus]\n")
        mark = len(srv.proc.logs())
        srv.proc.signal(signal.SIGHUP)
        srv.proc.wait_log("reload aborted", 10, after=mark)
        assert 'wsserver_config_reloads_total{result="invalid"} 1.0' in srv.get("/metrics", auth)[1]

        # A client that never answers the close: TERM's graceful window stays open meanwhile.
        stuck = socket.create_connection(("127.0.0.1", srv.plain), timeout=5)
        stuck.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert stuck.recv(100).startswith(b"HTTP/1.1 101")
        srv.proc.signal(signal.SIGTERM)
        wait_until(lambda: srv.get("/readyz") == (503, "stopping\n"), 3, what="/readyz 503 while draining")
        assert srv.get("/healthz") == (200, "ok\n")  # the master still lives
        assert srv.proc.wait(15) == 0
        stuck.close()
        with pytest.raises(OSError):
            srv.get("/healthz")  # and the listener went with it
    finally:
        srv.proc.stop()
