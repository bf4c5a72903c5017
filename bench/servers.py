"""The servers under test: wsserver (with its variants) and the peers, each started pinned, probed, stopped.

A variant the server cannot run yet (workers, thread pools, metrics, wss before those features land) is
detected by trying: the start fails or the feature is not seen, and ``NotAvailable`` carries the reason the
report prints as "n/a".
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.procfs import tree_pids, tree_threads

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "bench" / "peers" / "node"

PEERS = {
    "websockets": "bench.peers.py_websockets",
    "aiohttp": "bench.peers.py_aiohttp",
    "tornado": "bench.peers.py_tornado",
    "picows": "bench.peers.py_picows",
    "uvicorn": "bench.peers.py_uvicorn",
    "node-ws": "node",
}
ALL_KINDS = ("wsserver", *PEERS)
NO_DEFLATE = {"picows": "picows has no permessage-deflate"}


class NotAvailable(Exception):
    """This server or variant cannot run here; the message is the reason shown in the report."""


@dataclass(frozen=True)
class ServerSpec:
    kind: str  # wsserver or a key of PEERS
    workers: int = 1  # wsserver: [server] workers
    pool_mode: str = "greenlet"  # wsserver: [ports.pool] mode
    metrics: bool | None = None  # wsserver: None = no [metrics] table; True/False = enabled on/off
    tls: bool = False
    compression: bool = False
    cpus: str = "0"  # taskset CPU list; "" = not pinned
    label: str = ""  # overrides the name in reports

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.kind != "wsserver":
            return self.kind
        parts = []
        if self.workers != 1:
            parts.append(f"workers={self.workers}")
        if self.pool_mode != "greenlet":
            parts.append(f"pool={self.pool_mode}")
        if self.metrics is not None:
            parts.append(f"metrics={'on' if self.metrics else 'off'}")
        return "wsserver" + (f"[{','.join(parts)}]" if parts else "")

    def but(self, **changes) -> ServerSpec:
        return replace(self, **changes)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _raise_nofile() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:  # root may raise the hard limit too (up to fs.nr_open)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wsserver_toml(
    spec: ServerSpec, port: int, cert: Path | None, key: Path | None, metrics_port: int, pool_min: int = 4
) -> str:
    """The wsserver config of one variant (see docs/benchmarks.md)."""
    lines = ["[server]", f"workers = {spec.workers}", "graceful_timeout = 2", 'log_level = "warning"', ""]
    if spec.tls:
        # The keystore layout of the wss issue; if the server does not take it, the variant shows n/a.
        lines += [
            "[server.tls]",
            'keystore = "bench"',
            'key_alias = "default"',
            "",
            "[[keystores]]",
            'alias = "bench"',
            'type = "pem"',
            "",
            "[keystores.keys.default]",
            f'cert = "{cert}"',
            f'key = "{key}"',
            "",
        ]
    if spec.metrics is not None:
        lines += [
            "[metrics]",
            f"enabled = {'true' if spec.metrics else 'false'}",
            'bind = "127.0.0.1"',
            f"port = {metrics_port}",
            "",
        ]
    lines += [
        "[[endpoints]]",
        'path = "/echo"',
        'handler = "wsserver.endpoints.echo:Echo"',
        "",
        "[[ports]]",
        'alias = "bench"',
        f"port = {port}",
        'bind = "127.0.0.1"',
        f'protocol = "{"wss" if spec.tls else "ws"}"',
        f"compression = {'true' if spec.compression else 'false'}",
        "idle_timeout_ms = 0",
        "ping_interval_ms = 0",
        "max_connections = 0",
        "backlog = 6000",
    ]
    if spec.pool_mode != "greenlet":
        lines += ["", "[ports.pool]", f'mode = "{spec.pool_mode}"', f"min = {pool_min}"]
    return "\n".join(lines) + "\n"


def probe(host: str, port: int, path: str = "/echo", tls: bool = False, timeout: float = 2.0) -> str:
    """One WebSocket upgrade; returns the status line (raises OSError when nothing answers)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        try:
            sock.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000, zero mask
        except OSError:
            pass
        return data.split(b"\r\n", 1)[0].decode("latin-1")
    finally:
        sock.close()


class Server:
    """One started server process (and its children); stopped by PID only."""

    def __init__(
        self,
        spec: ServerSpec,
        workdir: Path,
        cert: Path | None = None,
        key: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.spec = spec
        self.workdir = workdir
        self.cert, self.key = cert, key
        self.python = python
        self.host = "127.0.0.1"
        self.port = 0
        self.metrics_port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"{spec.name}.log"
        self.known_pids: dict[int, bytes] = {}  # pid -> start time, so a reused PID is never signalled

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"{'wss' if self.spec.tls else 'ws'}://{self.host}:{self.port}/echo"

    def command(self) -> list[str]:
        spec = self.spec
        if spec.kind == "wsserver":
            config = self.workdir / f"{spec.name}.toml"
            config.write_text(wsserver_toml(spec, self.port, self.cert, self.key, self.metrics_port))
            return [self.python, "-m", "wsserver", "serve", "-c", str(config)]
        if spec.kind not in PEERS:
            raise NotAvailable(f"unknown server kind {spec.kind!r}")
        if spec.compression and spec.kind in NO_DEFLATE:
            raise NotAvailable(NO_DEFLATE[spec.kind])
        if spec.workers != 1 or spec.pool_mode != "greenlet" or spec.metrics is not None:
            raise NotAvailable("wsserver-only variant")
        if spec.kind == "node-ws":
            node = shutil.which("node")
            if node is None:
                raise NotAvailable("node is not installed")
            if not (NODE_DIR / "node_modules" / "ws").is_dir():
                raise NotAvailable("ws is not installed: run `npm ci` in bench/peers/node (make bench does)")
            cmd = [node, str(NODE_DIR / "server.js")]
        else:
            cmd = [self.python, "-m", PEERS[spec.kind]]
        cmd += ["--host", self.host, "--port", str(self.port), "--backlog", "6000"]
        if spec.compression:
            cmd.append("--compression")
        if spec.tls:
            cmd += ["--certfile", str(self.cert), "--keyfile", str(self.key)]
        return cmd

    def start(self, timeout: float = 25.0) -> Server:
        self.port = free_port(self.host)
        self.metrics_port = free_port(self.host)
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        if self.spec.cpus and shutil.which("taskset"):
            cmd = ["taskset", "-c", self.spec.cpus, *cmd]
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            PYTHONUNBUFFERED="1",
            PYTHONWARNINGS="ignore",
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child holds it; closed below
        try:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_raise_nofile,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
            self._check_features()
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        interesting = [t for t in text if not re.search(r"somaxconn|DeprecationWarning", t)] or text
        return " / ".join(t.strip()[:200] for t in interesting[-lines:])

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NotAvailable(f"exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                status = probe(self.host, self.port, tls=self.spec.tls)
                if " 101 " in status + " ":
                    self._remember(tree_pids(self.pid))
                    return
                last = status
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise NotAvailable(
            f"not answering a WebSocket upgrade after {timeout:.0f}s ({last}): {self.log_tail()}"
        )

    def _check_features(self) -> None:
        spec = self.spec
        if spec.kind != "wsserver":
            return
        time.sleep(0.3)
        pids = tree_pids(self.pid)
        self._remember(pids)
        if spec.workers > 1 and len(pids) < spec.workers:
            raise NotAvailable(f"workers = {spec.workers} not implemented yet: one process serves")
        if spec.pool_mode == "thread" and tree_threads(self.pid) <= len(pids):
            raise NotAvailable('pool mode = "thread" not implemented yet: no executor threads')
        if spec.metrics:
            try:
                conn = http.client.HTTPConnection(self.host, self.metrics_port, timeout=2)
                conn.request("GET", "/metrics")
                status = conn.getresponse().status
                conn.close()
            except OSError as exc:
                raise NotAvailable(
                    f"[metrics] not implemented yet: nothing on the metrics port ({exc})"
                ) from None
            if status != 200:
                raise NotAvailable(f"[metrics] not implemented yet: /metrics answered {status}")

    @staticmethod
    def _start_time(pid: int) -> bytes | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        fields = stat[stat.rindex(b")") + 2 :].split()
        return None if fields[0] in (b"Z", b"X") else fields[19]

    def _remember(self, pids: list[int]) -> None:
        for pid in pids:
            started = self._start_time(pid)
            if started is not None:
                self.known_pids[pid] = started

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM the process we started, then SIGKILL it and any child of it we saw, by PID."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._remember(tree_pids(self.pid))
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        for pid, started in self.known_pids.items():
            if pid != self.proc.pid and self._start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
