"""Helpers for tests of the pre-forking master: its worker processes, log lines, light clients."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from tests.support.rawws import RawClient, frame
from tests.support.server import REPO, ServerProcess


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (read from /proc; zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        time.sleep(interval)


class PreforkServer(ServerProcess):
    """A ``wsserver serve`` master; ``stop`` also makes sure none of its workers survive."""

    def __init__(
        self,
        tmp_path: Path,
        config_text: str | None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        pythonpath: tuple[str, ...] = (),
        module: str = "wsserver",
    ) -> None:
        super().__init__(tmp_path, config_text, args, env)
        self.seen_workers: set[int] = set()
        self.pythonpath = pythonpath
        self.module = module  # what ``python -m`` runs (a wrapper that tunes the master, say)

    def start(self, wait_for: tuple[str, int] | None = None, timeout: float = 15.0) -> PreforkServer:
        """As ``ServerProcess.start``, with ``pythonpath`` directories after the repository."""
        cmd = [sys.executable, "-m", self.module, "serve"]
        if self.config_path is not None:
            cmd += ["-c", str(self.config_path)]
        cmd += list(self.args)
        path = os.pathsep.join([str(REPO), *self.pythonpath])
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        env["PYTHONPATH"] = path
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        if wait_for is not None:
            try:
                self._wait(wait_for, timeout)
            except Exception:
                self.stop()
                raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> list[int]:
        pids = children_of(self.pid)
        self.seen_workers.update(pids)
        return pids

    def wait_workers(self, count: int, timeout: float = 15.0) -> list[int]:
        def exactly() -> list[int] | None:
            pids = self.workers()
            return pids if len(pids) == count else None

        return wait_until(exactly, timeout, what=f"{count} workers")

    def wait_log(self, pattern: str, timeout: float = 10.0, after: int = 0) -> re.Match:
        """The first match of the regex ``pattern`` in the log (from character ``after`` on)."""
        rx = re.compile(pattern)
        return wait_until(
            lambda: rx.search(self.logs(), after), timeout, interval=0.05, what=f"log line {pattern!r}"
        )

    def write_config(self, text: str) -> None:
        assert self.config_path is not None
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def reload(self, timeout: float = 15.0) -> None:
        """HUP and wait for the new generation to take over."""
        mark = len(self.logs())
        self.signal(signal.SIGHUP)
        self.wait_log(r'msg="reload complete"', timeout, after=mark)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.workers()
        code = super().stop(timeout)
        for pid in self.seen_workers:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return code


def log_time(line_match: re.Match, text: str) -> float:
    """The wall-clock time (epoch seconds) of the log line holding ``line_match``."""
    start = text.rfind("\n", 0, line_match.start()) + 1
    stamp = text[start : start + 23]
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:23]) / 1000


class Client(RawClient):
    """A raw WebSocket client that speaks text frames and answers the server's close."""

    def send_text(self, text: str) -> None:
        self.send(frame(0x1, text.encode()))

    def recv_text(self) -> str:
        """The next text message; raises ``Closed`` (with the code) on a close frame."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                try:
                    self.send(frame(0x8, payload[:2]))
                except OSError:
                    pass
                raise Closed(code)
            if opcode == 0x9:
                self.send(frame(0xA, payload))

    def close_normally(self) -> None:
        try:
            self.send(frame(0x8, struct.pack("!H", 1000)))
            self.sock.settimeout(2)
            while True:
                opcode, _ = self.recv_frame()
                if opcode == 0x8:
                    break
        except (OSError, ConnectionError):
            pass
        self.close()


class Closed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


def connect_refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def listening_sockets(port: int) -> int:
    """How many listening sockets ``ss`` shows on ``port``."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])
