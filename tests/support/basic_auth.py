"""A WebSocket client that logs in with HTTP Basic: the status a port answers."""

from __future__ import annotations

import base64

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def echo_status(
    port: int,
    user: str,
    password: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    open_timeout: float = 15,
) -> int:
    """101 once /echo echoed a message, else the refusal's HTTP status."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with connect(
            f"ws://127.0.0.1:{port}/echo{query}",
            additional_headers={"Authorization": f"Basic {token}", **(headers or {})},
            open_timeout=open_timeout,
        ) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code
