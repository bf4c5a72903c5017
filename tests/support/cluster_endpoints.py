"""Endpoints for the [cluster] tests (mounted by handler path in test configs)."""

from __future__ import annotations

from wsserver import BrokerUnavailable
from wsserver.endpoints.chat import Chat


class SafeChat(Chat):
    """The built-in chat that answers "error" when the broadcast could not reach the broker."""

    def on_text(self, session, text):
        try:
            super().on_text(session, text)
        except BrokerUnavailable:
            session.send("error")
