"""Start a real wsserver process on loopback for a test, and always stop it (by PID)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class ServerProcess:
    """``wsserver serve`` in a subprocess with its logs in a file."""

    def __init__(
        self,
        tmp_path: Path,
        config_text: str | None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = tmp_path / "wsserver.toml"
            self.config_path.write_text(config_text)
        self.log_path = tmp_path / "server.log"
        self.args = args
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, wait_for: tuple[str, int] | None = None, timeout: float = 15.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "wsserver", "serve"]
        if self.config_path is not None:
            cmd += ["-c", str(self.config_path)]
        cmd += list(self.args)
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **self.env)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        if wait_for is not None:
            try:
                self._wait(wait_for, timeout)
            except Exception:
                self.stop()
                raise
        return self

    def _wait(self, address: tuple[str, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            if "wsserver started" in self.logs():
                wait_listening(*address, timeout=max(0.1, deadline - time.monotonic()))
                return
            time.sleep(0.05)
        raise TimeoutError(f"server did not start in {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def port_config(
    port: int,
    alias: str = "test_ws",
    bind: str = "127.0.0.1",
    extra: str = "",
    endpoints: str | None = None,
    tables: str = "",
) -> str:
    """A config with one port and the echo endpoint; ``extra`` lines go into the [[ports]] table."""
    if endpoints is None:
        endpoints = '[[endpoints]]\npath = "/echo"\nhandler = "wsserver.endpoints.echo:Echo"\n'
    return (
        f"[server]\ngraceful_timeout = 5\n\n{endpoints}\n"
        f'[[ports]]\nalias = "{alias}"\nport = {port}\nbind = "{bind}"\n{extra}\n{tables}'
    )
