"""Endpoints used by the integration tests (mounted by handler path in test configs)."""

from __future__ import annotations

import os

from wsserver import Endpoint


class Boom(Endpoint):
    """Raises on the text "boom", echoes otherwise."""

    def on_text(self, session, text):
        if text == "boom":
            raise RuntimeError("boom requested")
        session.send(text)


class WhoAmI(Endpoint):
    """Answers every message with facts about the session and the process."""

    def on_text(self, session, text):
        session.send(f"{os.getpid()} {session.port_alias} {session.path} {session.remote_address[0]}")


class CloseOnText(Endpoint):
    """Closes with the code given in the message."""

    def on_text(self, session, text):
        session.close(int(text), "requested")
