"""Endpoints for the pre-forking tests (mounted by handler path in test configs)."""

from __future__ import annotations

import os
import time

from wsserver import Endpoint
from wsserver.endpoints.chat import Chat


class PidEcho(Endpoint):
    """Says "pid <worker pid>" on connect, then echoes."""

    def on_connect(self, session):
        session.send(f"pid {os.getpid()}")

    def on_text(self, session, text):
        if text == "hog":
            # Blocks the worker's hub (no greenlet switch): its heartbeat stops.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pass
        session.send(text)


class PidChat(Chat):
    """The built-in chat that first says "pid <worker pid>"."""

    def on_connect(self, session):
        session.send(f"pid {os.getpid()}")
        super().on_connect(session)


class FailsInWorker(Endpoint):
    """Imports and instantiates fine, except in a worker (a monkey-patched process)."""

    def __init__(self):
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            raise RuntimeError("this endpoint never starts in a worker")
