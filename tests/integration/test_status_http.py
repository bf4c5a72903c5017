"""The master's non-blocking HTTP server (prefork/httpd.py) and the metrics endpoint's rules
(prefork/status.py), driven by a poll loop like the arbiter's, in a thread of the test."""

from __future__ import annotations

import base64
import http.client
import select
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from wsserver.config import parse_config
from wsserver.prefork import httpd
from wsserver.prefork.httpd import HTTPServer, Request, Response
from wsserver.prefork.status import StatusServer
from wsserver.security.passwords import hash_password

pytestmark = pytest.mark.integration


class Loop:
    """Runs an HTTPServer's registrations through poll() until stopped: the arbiter's sleep()."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while self.running:
            poller = select.poll()
            for fd, events in self.server.registrations():
                poller.register(fd, events)
            for fd, events in poller.poll(20):
                self.server.on_event(fd, events)
            self.server.tick(time.monotonic())

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join(5)
        self.server.close()


def echo_handler(request: Request) -> Response:
    if request.path == "/slow-to-build":
        return Response(200, b"x" * 4_000_000)
    return Response(200, f"{request.method} {request.path} {request.query}\n".encode())


def serve(handler=echo_handler, **kwargs) -> tuple[HTTPServer, int]:
    server = HTTPServer(handler, name="test", **kwargs)
    assert server.listen("127.0.0.1", 0)
    return server, server.port


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def test_keep_alive_and_pipelining():
    server, port = serve()
    with Loop(server):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for path in ("/a?x=1", "/b"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read().startswith(f"GET {path.split('?')[0]}".encode())
        conn.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(
                b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 2 and b"GET /2" in data


def test_bad_requests_get_an_answer_and_a_close():
    server, port = serve()
    with Loop(server):
        for raw, status in (
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n", b"431"),
            (b"NOT HTTP\r\n\r\n", b"400"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b"413"),
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(raw)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            assert data.split(b" ")[1] == status, data[:80]


def test_a_slow_client_never_blocks_the_others(monkeypatch):
    monkeypatch.setattr(httpd, "REQUEST_TIMEOUT", 0.5)
    server, port = serve()
    with Loop(server):
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"GET /half")  # never finishes its request
        reader = socket.create_connection(("127.0.0.1", port), timeout=5)
        reader.sendall(b"GET /slow-to-build HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads the 4 MB
        t0 = time.monotonic()
        assert get(port, "/fast")[0] == 200
        assert time.monotonic() - t0 < 0.5
        slow.settimeout(3)
        assert slow.recv(100) == b""  # closed at its deadline
        slow.close()
        reader.close()


def test_connection_limit_and_allow_list():
    server, port = serve(max_connections=2, allow=lambda ip: ip == "127.0.0.1")
    with Loop(server):
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        time.sleep(0.1)
        waiting = socket.create_connection(("127.0.0.1", port), timeout=5)  # in the backlog
        waiting.sendall(b"GET /w HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.2)
        assert len(server.conns) == 2
        held[0].close()
        waiting.settimeout(5)
        assert waiting.recv(100).startswith(b"HTTP/1.1 200")
        for s in (waiting, held[1]):
            s.close()
    server2, port2 = serve(allow=lambda ip: False)
    with Loop(server2), socket.create_connection(("127.0.0.1", port2), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert s.recv(100) == b""  # closed without an answer
        except ConnectionResetError:
            pass  # or reset: the request was never read


def test_listen_retries_when_the_address_is_taken(monkeypatch):
    monkeypatch.setattr(httpd, "RETRY_LISTEN", 0.2)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    server = HTTPServer(echo_handler, name="test")
    assert not server.listen("127.0.0.1", port)
    with Loop(server):
        time.sleep(0.3)
        assert server.listener is None
        taken.close()
        deadline = time.monotonic() + 3
        while server.listener is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(port, "/again")[0] == 200


# ---- the metrics endpoint ------------------------------------------------------------------


def fake_master(config, ready: int = 2, stopping: bool = False):
    """What StatusServer reads of the master (prefork/service.py's MasterView), with one port."""
    sock = socket.socket()
    workers = [SimpleNamespace(pid=i, slot=i, gen=1, ready=i < ready, state="active") for i in range(2)]

    def listening(port):
        return [(port.bind, port.port)] if sock.fileno() >= 0 else []

    master = SimpleNamespace(
        stopping=stopping, config=config, target=2, workers=workers, listening=listening, port_socket=sock
    )  # the test closes it: the port stops listening
    return master, sock


CONFIG = """
[metrics]
port = {mport}
{extra}
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"
[[ports]]
alias = "p"
port = 1
bind = "127.0.0.1"
"""


@pytest.fixture
def status_server(tmp_path, monkeypatch):
    servers = []

    def start(extra: str = "", ready: int = 2):
        monkeypatch.setenv("UNIT_METRICS_PASSWORD", "s3cret-pass")
        config = parse_config(CONFIG.format(mport=9, extra=extra))
        master, sock = fake_master(config, ready)
        status = StatusServer()
        status.view = master
        status.dir = str(tmp_path)
        from wsserver import metrics

        status.registry = metrics.make_registry(metrics.MasterCollector(str(tmp_path), status.state))
        status.configure(config)
        status.http.close()
        assert status.http.listen("127.0.0.1", 0)
        servers.append((status, sock))
        return status, master

    yield start
    for status, sock in servers:
        status.http.close()
        sock.close()


def test_health_ready_and_metrics(status_server):
    status, master = status_server()
    with Loop(status.http):
        port = status.http.port
        assert get(port, "/healthz")[:2] == (200, b"ok\n")
        assert get(port, "/readyz")[0] == 200
        code, body, headers = get(port, "/metrics")
        assert code == 200 and b"wsserver_workers_target 2.0" in body
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        code, body, headers = get(port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert headers["Content-Type"].startswith("application/openmetrics-text") and body.endswith(
            b"# EOF\n"
        )
        assert get(port, "/nope")[0] == 404
        master.workers[1].ready = False
        assert get(port, "/readyz")[:2] == (503, b"1 of 2 workers ready\n")
        master.workers[1].ready = True
        master.port_socket.close()
        assert get(port, "/readyz")[:2] == (503, b"port p is not listening\n")
        master.stopping = True
        assert get(port, "/readyz")[:2] == (503, b"stopping\n")
        assert get(port, "/healthz")[0] == 200


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("secret", ["env", "hash"])
def test_basic_auth_protects_metrics_only(status_server, secret):
    if secret == "env":
        extra = 'user = "prom"\npassword_env = "UNIT_METRICS_PASSWORD"'
    else:
        extra = f'user = "prom"\npassword_hash = "{hash_password("s3cret-pass", scrypt_n=1024)}"'
    status, _ = status_server(extra)
    with Loop(status.http):
        port = status.http.port
        code, _, headers = get(port, "/metrics")
        assert code == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
        assert get(port, "/metrics", basic("prom", "wrong"))[0] == 401
        assert get(port, "/metrics", basic("other", "s3cret-pass"))[0] == 401
        if secret == "hash":
            time.sleep(1.1)  # one hash check per second after a failure
        assert get(port, "/metrics", basic("prom", "s3cret-pass"))[0] == 200
        assert get(port, "/metrics", basic("prom", "s3cret-pass"))[0] == 200  # the cached fast path
        assert get(port, "/healthz")[0] == 200 and get(port, "/readyz")[0] == 200


def test_allow_list(status_server):
    status, _ = status_server('allow = ["10.0.0.0/8", "::1"]')
    assert not status._allowed("127.0.0.1") and status._allowed("10.1.2.3") and status._allowed("::1")
    assert status._allowed("::ffff:10.0.0.1")
    status2, _ = status_server('allow = ["127.0.0.0/8"]')
    with Loop(status2.http):
        assert get(status2.http.port, "/healthz")[0] == 200
