"""The protocol layer stays sans-IO: stdlib, h11 and wsproto only; no sockets, gevent or clocks."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import wsserver.protocol

PACKAGE = Path(wsserver.protocol.__file__).parent
FORBIDDEN = {"socket", "ssl", "select", "selectors", "time", "gevent", "greenlet", "threading", "asyncio"}
ALLOWED_THIRD_PARTY = {"h11", "wsproto"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imports_are_stdlib_h11_wsproto_only():
    for path in sorted(PACKAGE.glob("*.py")):
        for name in imported_modules(path):
            assert name not in FORBIDDEN, f"{path.name} imports {name}"
            assert name in sys.stdlib_module_names or name in ALLOWED_THIRD_PARTY or name == "__future__", (
                f"{path.name} imports {name}"
            )


def test_public_surface_of_the_contract():
    for name in (
        "Handshake",
        "HandshakeRequest",
        "HandshakeError",
        "WebSocketProtocol",
        "TextMessage",
        "BinaryMessage",
        "Ping",
        "Pong",
        "CloseReceived",
        "ProtocolState",
        "origin_allowed",
    ):
        assert hasattr(wsserver.protocol, name), name
