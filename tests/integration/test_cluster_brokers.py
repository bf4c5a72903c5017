"""[cluster] broker URLs against live servers: unix://, a password from password_env, and
rediss:// (TLS, verified with tls_ca_file) through HAProxy terminating TLS in front of a real
redis-server (Debian's redis-server is built without TLS); `wsserver check` says whether the
broker answers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import REDIS_SERVER, Backend, Pki, have_commands, tcp_open
from tests.support.prefork import Client, PreforkServer
from tests.support.server import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(have_commands(REDIS_SERVER)), reason="redis-server is not installed"),
]

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-redis"
ENV = {"WSSERVER_TEST_REDIS_PASSWORD": PASSWORD}


class Brokers:
    """One password-protected redis-server reachable three ways."""

    def __init__(self, redis: Backend, tls_port: int, sock: Path, ca: Path) -> None:
        self.redis, self.tls_port, self.sock, self.ca = redis, tls_port, sock, ca

    def url(self, kind: str) -> str:
        if kind == "redis":
            return f"redis://{HOST}:{self.redis.port}/0"
        if kind == "unix":
            return f"unix://{self.sock}?db=0"
        return f"rediss://{HOST}:{self.tls_port}/0"


def _answers_ping(port: int) -> bool:
    if not tcp_open(port):
        return False
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (scripts/system-deps.sh)")
    d = tmp_path_factory.mktemp("brokers")
    pki = Pki(d / "pki")
    port, tls_port, sock = free_port(), free_port(), d / "redis.sock"
    redis = Backend(
        "redis",
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
            "--daemonize",
            "no",
        ],
        d,
        lambda b: _answers_ping(port),
    )
    redis.port = port
    cfg = d / "haproxy.cfg"
    cfg.write_text(f"""global
    log stdout format raw local0
defaults
    mode tcp
    timeout connect 2s
    timeout client 1m
    timeout server 1m
frontend redis_tls
    bind {HOST}:{tls_port} ssl crt {pki.server_combined}
    default_backend redis
backend redis
    server r1 {HOST}:{port}
""")
    tls = Backend("haproxy", ["haproxy", "-f", str(cfg), "-db"], d, lambda b: tcp_open(tls_port))
    redis.start()
    try:
        tls.start()
        try:
            yield Brokers(redis, tls_port, sock, pki.ca_pem)
        finally:
            tls.stop()
    finally:
        redis.stop()


def cluster_section(brokers: Brokers, kind: str, password: bool = True, history: int = 100) -> str:
    lines = [
        f'broker = "{brokers.url(kind)}"',
        'node = "n1"',
        "connect_timeout_ms = 1000",
        f"history_size = {history}",
    ]
    if password:
        lines.append('password_env = "WSSERVER_TEST_REDIS_PASSWORD"')
    if kind == "rediss":
        lines.append(f'tls_ca_file = "{brokers.ca}"')
    return "[cluster]\n" + "\n".join(lines) + "\n\n"


def config(port: int, cluster: str) -> str:
    return (
        "[server]\nworkers = 2\ngraceful_timeout = 2\n\n"
        + cluster
        + '[[endpoints]]\npath = "/ps"\nhandler = "wsserver.endpoints.pubsub:PubSub"\n\n'
        f'[[ports]]\nalias = "main"\nport = {port}\nbind = "{HOST}"\n'
    )


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "check.toml"
    path.write_text(text)
    import os

    return subprocess.run(
        [sys.executable, "-m", "wsserver", "check", "-c", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, **ENV),
    )


@pytest.mark.parametrize("kind", ["redis", "unix", "rediss"])
def test_check_says_the_broker_answers(brokers, kind, tmp_path):
    proc = check(tmp_path, config(free_port(), cluster_section(brokers, kind)))
    assert proc.returncode == 0, proc.stderr
    [note] = [line for line in proc.stdout.splitlines() if line.startswith("# cluster.broker:")]
    assert note.startswith("# cluster.broker: answers (redis 7.") or note.startswith(
        "# cluster.broker: answers (redis "
    )
    assert PASSWORD not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("kind", "password", "expected"),
    [
        ("redis", False, "Authentication required"),
        ("rediss", False, "Authentication required"),
    ],
)
def test_check_says_the_broker_does_not_answer(brokers, kind, password, expected, tmp_path):
    proc = check(tmp_path, config(free_port(), cluster_section(brokers, kind, password=password)))
    assert proc.returncode == 0, proc.stderr  # not a configuration error: workers keep trying
    [note] = [line for line in proc.stdout.splitlines() if line.startswith("# cluster.broker:")]
    assert note.startswith("# cluster.broker: does not answer (") and expected in note


def test_rediss_refuses_a_server_its_ca_file_does_not_trust(brokers, tmp_path):
    other = Pki(tmp_path / "other")
    text = config(free_port(), cluster_section(brokers, "rediss").replace(str(brokers.ca), str(other.ca_pem)))
    [note] = [
        line for line in check(tmp_path, text).stdout.splitlines() if line.startswith("# cluster.broker:")
    ]
    assert note.startswith("# cluster.broker: does not answer (") and "certificate verify failed" in note


@pytest.mark.parametrize("kind", ["unix", "rediss"])
def test_a_server_publishes_and_receives_through_the_broker(brokers, kind, tmp_path):
    port = free_port()
    server = PreforkServer(tmp_path, config(port, cluster_section(brokers, kind)), env=ENV)
    try:
        server.start(wait_for=(HOST, port), timeout=20)
        server.wait_workers(2)
        subscriber, publisher = Client(HOST, port, "/ps"), Client(HOST, port, "/ps")
        subscriber.send_text(json.dumps({"op": "subscribe", "group": kind}))
        assert json.loads(subscriber.recv_text()) == {"op": "subscribed", "group": kind, "recovered": True}
        publisher.send_text(json.dumps({"op": "publish", "group": kind, "data": "hello", "ref": 1}))
        published = json.loads(publisher.recv_text())
        assert published["op"] == "published" and published["offset"]  # the history script ran on Redis
        assert json.loads(subscriber.recv_text()) == {
            "op": "message",
            "group": kind,
            "offset": published["offset"],
            "data": "hello",
        }
        for c in (subscriber, publisher):
            c.close()
    finally:
        server.stop()
