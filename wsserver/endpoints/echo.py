"""The built-in echo endpoint: every message comes back as it came."""

from __future__ import annotations

from wsserver.endpoints.base import Endpoint, SessionAPI


class Echo(Endpoint):
    def on_text(self, session: SessionAPI, text: str) -> None:
        session.send(text)

    def on_binary(self, session: SessionAPI, data: bytes) -> None:
        session.send(data)
