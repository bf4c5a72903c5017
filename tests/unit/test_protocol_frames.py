"""Client-side frame builders for the protocol tests (and a check that they match wsproto)."""

from __future__ import annotations

import base64
import os
import struct

from wsproto.frame_protocol import FrameProtocol, Opcode

from wsserver.protocol import Handshake, WebSocketProtocol

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
KEY = b"\x37\xfa\x21\x3d"


def frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    key: bytes = KEY,
    encoding: int | None = None,
) -> bytes:
    """One client frame. ``encoding`` forces the length form (7, 16 or 64 bits) for odd frames."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if encoding is None:
        encoding = 7 if n <= 125 else 16 if n <= 0xFFFF else 64
    if encoding == 7:
        header = bytes((first, mask_bit | n))
    elif encoding == 16:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    masked_payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked_payload


def close_frame(code: int | None = None, reason: bytes | str = b"", **kw) -> bytes:
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return frame(CLOSE, payload, **kw)


def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    """What a server sends (unmasked)."""
    return frame(opcode, payload, masked=False)


def upgrade_request(
    path: str = "/echo", extra: list[tuple[str, str]] | None = None, **overrides: str | None
) -> bytes:
    """A valid upgrade request; ``overrides`` replace (or with None drop) a header by name."""
    headers = {
        "Host": "example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        match = next((h for h in headers if h.lower() == name.lower()), name)
        if value is None:
            headers.pop(match, None)
        else:
            headers[match] = value
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def open_protocol(**kw) -> WebSocketProtocol:
    """A protocol straight after a successful handshake; ``kw`` go to ``accept``."""
    hs = Handshake()
    extensions = kw.pop("offer", None)
    extra = [("Sec-WebSocket-Extensions", extensions)] if extensions else None
    hs.receive_data(upgrade_request(extra=extra))
    request = hs.next_request()
    assert request is not None
    _, proto = hs.accept(request, **kw)
    return proto


def test_frame_builder_matches_wsproto_client_framing():
    client = FrameProtocol(client=True, extensions=[])
    for size in (0, 5, 125, 126, 65535, 65536):
        payload = os.urandom(size)
        wire = client.send_data(payload)
        key = bytes(wire[-size - 4 : -size]) if size else bytes(wire[-4:])
        assert frame(BINARY, payload, key=key) == wire


def test_opcode_constants_match_wsproto():
    assert (TEXT, BINARY, CONT, CLOSE, PING, PONG) == (
        Opcode.TEXT,
        Opcode.BINARY,
        Opcode.CONTINUATION,
        Opcode.CLOSE,
        Opcode.PING,
        Opcode.PONG,
    )
