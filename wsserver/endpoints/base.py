"""The Endpoint base class: what user code subclasses and mounts with ``[[endpoints]]``."""

from __future__ import annotations

from typing import Protocol


class SessionAPI(Protocol):
    """What an endpoint may do with a session (implemented by ``wsserver.runtime.session``)."""

    id: str
    remote_address: tuple[str, int]
    user: str | None
    port_alias: str
    path: str
    subprotocol: str | None

    @property
    def closed(self) -> bool: ...

    def send(self, message: str | bytes) -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...


class Endpoint:
    """Base class of every endpoint.

    One instance serves every session of its mount in a worker process, so state kept on
    ``self`` is shared by those sessions (a chat room, a cache). Callbacks of one session run
    one at a time and in order. An exception escaping a callback is logged, passed to
    :meth:`on_error`, and closes only that session with 1011.
    """

    def on_connect(self, session: SessionAPI) -> None:
        """The handshake succeeded; ``session`` can send from now on."""

    def on_text(self, session: SessionAPI, text: str) -> None:
        """A complete text message arrived."""

    def on_binary(self, session: SessionAPI, data: bytes) -> None:
        """A complete binary message arrived."""

    def on_close(self, session: SessionAPI, code: int, reason: str) -> None:
        """The session ended; ``code`` is the close code (1006 when the TCP connection dropped)."""

    def on_error(self, session: SessionAPI, exc: BaseException) -> None:
        """A callback raised ``exc``; the session is about to be closed with 1011."""
