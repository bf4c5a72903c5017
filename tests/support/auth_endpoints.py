"""Endpoints for the authentication tests."""

from __future__ import annotations

from wsserver import Endpoint


class WhoAmI(Endpoint):
    """Answers every message with the session's user and the query string the endpoint sees."""

    def on_text(self, session, text):
        session.send(f"user={session.user} query={getattr(session, 'query', '')}")
