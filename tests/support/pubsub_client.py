"""A small client of the PubSub endpoint (wsserver.endpoints.pubsub) for cluster tests.

A reader thread keeps every reply: the ``message``s received (with their offsets), the answer
to each ``ref``, the ``subscribed`` replies, and whether the connection ended. Tests wait on
these with deadlines instead of sleeping. ``proxy_from`` makes the client write its own PROXY
v2 header, to reach a node's ``proxy_protocol = "v2"`` port directly (from a trusted address).

``GatedPubSub`` is the PubSub endpoint with a boot gate for readiness tests: a worker that
loads it waits while the file named by ``$WS_TEST_BOOT_GATE`` exists, so it never reports
ready meanwhile and the master's ``/readyz`` says 503 while the other workers keep serving.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from typing import Any

from tests.support.rawws import frame, upgrade_request
from wsserver.endpoints.pubsub import PubSub

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PUBSUB = "wsserver.endpoints.pubsub:PubSub"


def pubsub_server_config(
    port: int, cluster: str, pool: str = "greenlet", workers: int = 2, host: str = "127.0.0.1"
) -> str:
    """A server with ``workers`` workers serving PubSub on /ps at ``host:port``, and ``cluster``
    (a ``[cluster]`` table, or "")."""
    return (
        f"[server]\nworkers = {workers}\ngraceful_timeout = 2\n\n{cluster}"
        f'[[endpoints]]\npath = "/ps"\nhandler = "{PUBSUB}"\n\n'
        f'[[ports]]\nalias = "main"\nport = {port}\nbind = "{host}"\n\n[ports.pool]\nmode = "{pool}"\n'
    )


def proxy_v2(src: str, dst: str, sport: int, dport: int) -> bytes:
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(block)) + block


def offset_key(offset: str) -> tuple[int, int]:
    ms, seq = offset.split("-")
    return int(ms), int(seq)


class HandshakeFailed(ConnectionError):
    pass


class PubSubClient:
    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/ps",
        source: str | None = None,
        proxy_from: str | None = None,
        timeout: float = 5.0,
        name: str = "",
    ) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            if source is not None:
                self.sock.bind((source, 0))
            self.sock.connect((host, port))
            self.local_port = self.sock.getsockname()[1]
            if proxy_from is not None:
                self.sock.sendall(proxy_v2(proxy_from, host, self.local_port, port))
            self.sock.sendall(upgrade_request(path, host))
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = self.sock.recv(65536)
                if not data:
                    raise HandshakeFailed(f"closed during the handshake: {buf!r}")
                buf += data
        except OSError as exc:
            self.sock.close()
            raise HandshakeFailed(str(exc) or repr(exc)) from exc
        head, self._buf = buf.split(b"\r\n\r\n", 1)
        if int(head.split()[1]) != 101:
            self.sock.close()
            raise HandshakeFailed(head.decode("latin-1").split("\r\n", 1)[0])
        self.sock.settimeout(None)
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self.messages: list[dict] = []  # every "message", in arrival order
        self.answers: dict[Any, list[dict]] = {}  # ref -> every "published"/"error" with it
        self.subscribed: list[tuple[int, dict]] = []  # (len(messages) when it came, the reply)
        self.others: list[dict] = []
        self.closed = False
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"pubsub-{name}")
        self._reader.start()

    # ---- receiving -----------------------------------------------------------------------------
    def _recv_frame(self) -> tuple[int, bytes]:
        def need(n: int) -> None:
            while len(self._buf) < n:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                self._buf += data

        need(2)
        length, offset = self._buf[1] & 0x7F, 2
        if length == 126:
            need(4)
            length, offset = struct.unpack("!H", self._buf[2:4])[0], 4
        elif length == 127:
            need(10)
            length, offset = struct.unpack("!Q", self._buf[2:10])[0], 10
        need(offset + length)
        opcode, payload = self._buf[0] & 0x0F, self._buf[offset : offset + length]
        self._buf = self._buf[offset + length :]
        return opcode, payload

    def _read(self) -> None:
        try:
            while True:
                opcode, payload = self._recv_frame()
                if opcode == 0x9:
                    self._send_raw(frame(0xA, payload))
                elif opcode == 0x8:
                    self._send_raw(frame(0x8, payload[:2]))
                    break
                elif opcode == 0x1:
                    self._keep(json.loads(payload.decode()))
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def _keep(self, reply: dict) -> None:
        with self._cond:
            op = reply.get("op")
            if op == "message":
                self.messages.append(reply)
            elif op in ("published", "error") and reply.get("ref") is not None:
                self.answers.setdefault(reply["ref"], []).append(reply)
            elif op == "subscribed":
                self.subscribed.append((len(self.messages), reply))
            else:
                self.others.append(reply)
            self._cond.notify_all()

    def wait(self, predicate, timeout: float = 10.0, what: str = "condition") -> Any:
        """``predicate()`` (called under the client's lock) once true; raises after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: {what} not reached in {timeout}s")
                self._cond.wait(min(left, 0.2))

    def offsets(self) -> list[str]:
        with self._cond:
            return [m["offset"] for m in self.messages]

    def last_offset(self) -> str | None:
        with self._cond:
            return self.messages[-1]["offset"] if self.messages else None

    def wait_closed(self, timeout: float = 10.0) -> None:
        self.wait(lambda: self.closed, timeout, "the end of the connection")

    def wait_messages(self, count: int, timeout: float = 10.0) -> list[dict]:
        self.wait(lambda: len(self.messages) >= count, timeout, f"{count} messages")
        with self._cond:
            return list(self.messages)

    # ---- sending -------------------------------------------------------------------------------
    def _send_raw(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def send_json(self, **request: Any) -> None:
        self._send_raw(frame(0x1, json.dumps(request).encode()))

    def subscribe(
        self, group: str, since: str | None = None, timeout: float = 10.0
    ) -> tuple[list[dict], dict]:
        """(the messages that came before "subscribed", i.e. the recovered ones; the reply)."""
        with self._cond:
            first, count = len(self.messages), len(self.subscribed)
        request: dict[str, Any] = {"op": "subscribe", "group": group}
        if since is not None:
            request["since"] = since
        self.send_json(**request)
        self.wait(lambda: len(self.subscribed) > count, timeout, f"subscribed to {group}")
        with self._cond:
            at, reply = self.subscribed[count]
            return self.messages[first:at], reply

    def publish(self, group: str, data: Any, ref: Any, timeout: float = 10.0) -> dict:
        """The one answer (published or error) to this ``ref``."""
        self.send_json(op="publish", group=group, data=data, ref=ref)
        return self.wait(lambda: self.answers.get(ref, [None])[0], timeout, f"the answer to {ref!r}")

    def close(self) -> None:
        try:
            self._send_raw(frame(0x8, struct.pack("!H", 1000)))
            self.wait_closed(2)
        except (OSError, TimeoutError):
            pass
        self.abort()

    def abort(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(5)


class GatedPubSub(PubSub):
    def __init__(self) -> None:
        super().__init__()
        gate = os.environ.get("WS_TEST_BOOT_GATE")
        deadline = time.monotonic() + 60
        while gate and os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
