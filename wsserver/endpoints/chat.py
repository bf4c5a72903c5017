"""The built-in chat endpoint: every message goes to everyone in the room, on every worker.

Mount it with ``handler = "wsserver.endpoints.chat:Chat"``. The room is named by the query
string (``/chat?room=kitchen`` or just ``/chat?kitchen``), else it is ``lobby``. A text or
binary message from one member is broadcast to every member of the room, the sender
included, in the order that sender sent them; members on other worker processes get it
through the master's relay (see ``docs/operations.md``).
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote_plus

from wsserver.endpoints.base import Endpoint, SessionAPI

DEFAULT_ROOM = "lobby"


def room_of(query: str) -> str:
    """``room=NAME`` from a query string, or the bare query itself, else ``lobby``."""
    if not query:
        return DEFAULT_ROOM
    values = parse_qs(query).get("room")
    if values:
        return values[0] or DEFAULT_ROOM
    if "=" not in query and "&" not in query:
        return unquote_plus(query)
    return DEFAULT_ROOM


class Chat(Endpoint):
    def __init__(self) -> None:
        self._rooms: dict[str, str] = {}  # session id -> its room (sessions of this worker)

    def on_connect(self, session: SessionAPI) -> None:
        room = room_of(getattr(session, "query", ""))
        self._rooms[session.id] = room
        session.join(room)

    def on_text(self, session: SessionAPI, text: str) -> None:
        session.broadcast(text, self._rooms[session.id])

    def on_binary(self, session: SessionAPI, data: bytes) -> None:
        session.broadcast(data, self._rooms[session.id])

    def on_close(self, session: SessionAPI, code: int, reason: str) -> None:
        self._rooms.pop(session.id, None)
