"""The Endpoint base class: what user code subclasses and mounts with ``[[endpoints]]``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from wsserver.protocol.close_codes import CloseCode

if TYPE_CHECKING:
    from wsserver.runtime.groups import JoinResult


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

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None: ...

    def join(
        self,
        group: str,
        since: str | None = None,
        deliver: Callable[[str, str | bytes, str | None], None] | None = None,
    ) -> JoinResult:
        """Receive what is broadcast to ``group`` until :meth:`leave` or the session's end;
        ``since`` (an offset) first delivers what was missed (``[cluster] history_size``);
        ``deliver(group, message, offset)`` replaces :meth:`send` for the group's messages."""
        ...

    def leave(self, group: str) -> None: ...

    def broadcast(self, message: str | bytes, group: str) -> str | None:
        """Send to every member of ``group`` on every worker (and node with ``[cluster]``);
        returns the offset with history, else None; ``BrokerUnavailable`` when Redis refused it."""
        ...

    def presence(self, group: str) -> list[dict[str, Any]]:
        """``[{"session": ID, "user": USER, "node": NODE}, ...]``: the members of ``group`` on
        every node with ``[cluster]`` (``BrokerUnavailable`` when Redis cannot be read), only
        this worker's without it."""
        ...


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
