"""Helpers for the admin tests: a config with an admin user, an HTTP client, WebSocket probes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import connect

from tests.support.prefork import PreforkServer, wait_until
from tests.support.server import REPO, free_port, wait_listening
from wsserver.security.passwords import hash_password

HOST = "127.0.0.1"
ADMIN_USER = "root"
ADMIN_PASSWORD = "admin-test-password"
ADMIN_HASH = hash_password(ADMIN_PASSWORD, scrypt_n=2**12)


def admin_config(admin_port: int, body: str, workers: int = 2, graceful: float = 30) -> str:
    """A config with an admin listener on ``admin_port``, one admin user, and ``body``
    ([[packages]], [[endpoints]], [[ports]] ...)."""
    return (
        f"# wsserver admin test configuration\n[server]\nworkers = {workers}\ngraceful_timeout = {graceful}\n\n"
        f'[metrics]\nenabled = false\n\n[admin]\nbind = "{HOST}"\nport = {admin_port}   # the admin listener\n\n'
        f"{body}\n"
        f'[[users]]\nname = "{ADMIN_USER}"\npassword_hash = "{ADMIN_HASH}"\nconnection_types = ["admin"]\n'
    )


def port_table(alias: str, port: int, package: str = "", extra: str = "") -> str:
    pkg = f'package = "{package}"\n' if package else ""
    return f'[[ports]]\nalias = "{alias}"\nport = {port}\nbind = "{HOST}"\n{pkg}{extra}\n'


ECHO = '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n{package}\n'


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class AdminHTTP:
    def __init__(self, port: int, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> None:
        self.url = f"http://{HOST}:{port}"
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def __call__(
        self,
        method: str,
        path: str,
        data: object = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> Reply:
        hdrs = {"Authorization": self.auth, **(headers or {})}
        if data is not None:
            body = json.dumps(data).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return Reply(
                    response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
                )
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def ws_url(port: int, path: str = "/echo") -> str:
    return f"ws://{HOST}:{port}{path}"


def echo_works(port: int, path: str = "/echo") -> bool:
    with connect(ws_url(port, path), open_timeout=5) as ws:
        ws.send("ping")
        return ws.recv(timeout=5) == "ping"


def refused(port: int, path: str = "/echo") -> str:
    """How a WebSocket connection attempt fails: "refused", "404", ... or "" if it opened."""
    try:
        with connect(ws_url(port, path), open_timeout=3):
            return ""
    except ConnectionRefusedError:
        return "refused"
    except InvalidStatus as exc:
        return str(exc.response.status_code)
    except (WebSocketException, OSError) as exc:  # accepted, then dropped (a listener closing)
        return type(exc).__name__


def refused_soon(port: int, path: str = "/echo", expect: str = "refused", timeout: float = 3.0) -> bool:
    """Whether connections get ``expect`` within ``timeout``: after a change the old generation
    of workers needs a few milliseconds to hear that it must stop accepting."""
    return bool(
        wait_until(
            lambda: refused(port, path) == expect, timeout, interval=0.05, what=f"{expect} on port {port}"
        )
    )


def close_code(ws, timeout: float) -> int | None:
    """Wait for the server to close ``ws``; its close code (None if it did not in time)."""
    try:
        while True:
            ws.recv(timeout=timeout)
    except TimeoutError:
        return None
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


def run_cli(
    *args: str, password: str = ADMIN_PASSWORD, stdin: str | None = None
) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=str(REPO), WSSERVER_ADMIN_PASSWORD=password, WSSERVER_ADMIN_USER=ADMIN_USER
    )
    return subprocess.run(
        [sys.executable, "-m", "wsserver", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[Callable[..., tuple[PreforkServer, AdminHTTP]]]:
    """Start masters with an admin listener; each is stopped (by PID) afterwards."""
    started: list[PreforkServer] = []

    def start(
        body: str, wait_port: int, workers: int = 2, graceful: float = 30, env: dict[str, str] | None = None
    ) -> tuple[PreforkServer, AdminHTTP]:
        admin_port = free_port()
        workdir = tmp_path / f"server{len(started) + 1}"
        workdir.mkdir()
        server = PreforkServer(workdir, admin_config(admin_port, body, workers, graceful), env=env)
        started.append(server)
        server.start(wait_for=(HOST, wait_port), timeout=20)
        wait_listening(HOST, admin_port, timeout=15)
        server.wait_log(r'msg="admin listening"', timeout=15)
        return server, AdminHTTP(admin_port)

    yield start
    for server in started:
        server.stop()


def admin_pids(server: PreforkServer) -> list[int]:
    """The master's children that are admin processes (by their title)."""
    found = []
    for pid in server.workers():
        try:
            if b"wsserver: admin" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


__all__ = [
    "ECHO",
    "HOST",
    "AdminHTTP",
    "admin_pids",
    "admin_server",
    "close_code",
    "echo_works",
    "free_port",
    "port_table",
    "refused",
    "refused_soon",
    "run_cli",
    "wait_until",
    "ws_url",
]
