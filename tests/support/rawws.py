"""A deliberately minimal raw WebSocket client for sending malformed input to a real server."""

from __future__ import annotations

import base64
import os
import socket
import struct


def http_exchange(host: str, port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or times out)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except TimeoutError:
            pass
    return b"".join(chunks)


def upgrade_request(
    path: str = "/echo", host: str = "127.0.0.1", extra: str = "", key: str | None = None, version: str = "13"
) -> bytes:
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade"]
    if key:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version:
        lines.append(f"Sec-WebSocket-Version: {version}")
    text = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return text.encode("latin-1")


def status_of(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0]
    return int(line.split()[1])


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawClient:
    def __init__(
        self, host: str, port: int, path: str = "/echo", timeout: float = 5.0, extra_headers: str = ""
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall(upgrade_request(path, host, extra_headers))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed during handshake: {self.buf!r}")
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.response_head = head.decode("latin-1")
        self.status = int(head.split()[1])

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed")
            self.buf += data

    def recv_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server (which never masks)."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        length, offset = b1 & 0x7F, 2
        if length == 126:
            self._need(4)
            length, offset = struct.unpack("!H", self.buf[2:4])[0], 4
        elif length == 127:
            self._need(10)
            length, offset = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(offset + length)
        payload = self.buf[offset : offset + length]
        self.buf = self.buf[offset + length :]
        return b0 & 0x0F, payload

    def recv_close(self) -> int:
        """Read frames until a close frame; return its code (1005 when it carries none)."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005

    def at_eof(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
