"""The built-in PubSub endpoint: clients subscribe to groups and publish to them in JSON.

Mount it with ``handler = "wsserver.endpoints.pubsub:PubSub"``. Every client message is one
JSON object (text frame):

- ``{"op": "subscribe", "group": G, "since": OFFSET}`` (``since`` optional) →
  the messages missed after ``since`` (with ``[cluster] history_size``), then
  ``{"op": "subscribed", "group": G, "recovered": true|false}``, then the live messages;
- ``{"op": "unsubscribe", "group": G}`` → ``{"op": "unsubscribed", "group": G}``;
- ``{"op": "publish", "group": G, "data": ANY, "ref": R}`` (``ref`` optional) → every
  subscriber of G, on every worker and server, gets
  ``{"op": "message", "group": G, "offset": O, "data": ANY}``; with ``ref`` the publisher gets
  ``{"op": "published", "group": G, "ref": R, "offset": O}``;
- ``{"op": "presence", "group": G}`` → ``{"op": "presence", "group": G, "members":
  [{"session": ID, "user": USER, "node": NODE}, ...]}``: the group's members on every node
  (``[cluster] presence_ttl_s > 0``), or only those of the worker that answers without
  ``[cluster]``.

A request that fails gets ``{"op": "error", "ref": R, "error": TEXT}`` (``ref`` null when the
request had none or was not readable). ``offset`` is the message's id in the group's history
(``[cluster] history_size > 0``), else null. When Redis is unavailable, ``publish`` and
``presence`` get an ``error`` (``"broker unavailable: ..."``). A message that another
endpoint broadcast to the group as text that is not JSON arrives as a JSON string; a binary
one as
``{"op": "message", ..., "data": BASE64, "encoding": "base64"}``. See docs/cluster.md.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from wsserver.endpoints.base import Endpoint, SessionAPI
from wsserver.protocol import encode_message
from wsserver.runtime.broker import BrokerUnavailable

MAX_GROUP = 255
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class PubSub(Endpoint):
    def __init__(self) -> None:
        # The last message formatted and its frame, reused for every member of this worker it
        # goes to (a broadcast reaches them one after the other).
        self._last: tuple[Any, str, str | None, str, bytes] | None = None

    def on_text(self, session: SessionAPI, text: str) -> None:
        ref = None
        try:
            request = json.loads(text)
            if not isinstance(request, dict):
                raise _Refused("a request is a JSON object")
            ref = request.get("ref")
            op = request.get("op")
            if op == "subscribe":
                self._subscribe(session, request)
            elif op == "publish":
                self._publish(session, request, ref)
            elif op == "presence":
                group = _group(request)
                members = session.presence(group)
                session.send(_compact({"op": "presence", "group": group, "members": members}))
            elif op == "unsubscribe":
                group = _group(request)
                session.leave(group)
                session.send(_compact({"op": "unsubscribed", "group": group}))
            else:
                raise _Refused(f"unknown op {op!r}" if op is not None else "no op")
        except ValueError as exc:  # bad JSON, _Refused
            session.send(_compact({"op": "error", "ref": ref, "error": str(exc) or "bad request"}))
        except BrokerUnavailable as exc:
            session.send(_compact({"op": "error", "ref": ref, "error": f"broker unavailable: {exc}"}))

    def on_binary(self, session: SessionAPI, data: bytes) -> None:
        session.send(_compact({"op": "error", "ref": None, "error": "requests are JSON text messages"}))

    def _subscribe(self, session: SessionAPI, request: dict[str, Any]) -> None:
        group = _group(request)
        since = request.get("since")
        if since is not None and not isinstance(since, str):
            raise _Refused("since is an offset string or null")

        send_encoded = getattr(session, "send_encoded", None)  # the runtime's: one frame for all members

        def deliver(group: str, message: str | bytes, offset: str | None) -> None:
            text, frame = self._format(group, message, offset)
            if send_encoded is not None:
                send_encoded(text, frame)
            else:
                session.send(text)

        try:
            result = session.join(group, since=since, deliver=deliver)
        except ValueError:
            raise _Refused(f"bad offset {since!r}") from None
        session.send(_compact({"op": "subscribed", "group": group, "recovered": result.recovered}))

    def _publish(self, session: SessionAPI, request: dict[str, Any], ref: Any) -> None:
        group = _group(request)
        if "data" not in request:
            raise _Refused("publish needs data")
        offset = session.broadcast(_compact(request["data"]), group)
        if ref is not None:
            session.send(_compact({"op": "published", "group": group, "ref": ref, "offset": offset}))

    def _format(self, group: str, message: str | bytes, offset: str | None) -> tuple[str, bytes]:
        """The ``message`` op of a group message, as text and as an uncompressed frame."""
        last = self._last
        if last is not None and last[0] is message and last[1] == group and last[2] == offset:
            return last[3], last[4]
        head = '{"op":"message","group":' + _compact(group) + ',"offset":' + _compact(offset)
        if isinstance(message, str):
            try:
                json.loads(message)
                data = message
            except ValueError:
                data = _compact(message)
            text = head + ',"data":' + data + "}"
        else:
            text = head + ',"data":"' + base64.b64encode(message).decode() + '","encoding":"base64"}'
        frame = encode_message(text)
        self._last = (message, group, offset, text, frame)
        return text, frame


class _Refused(ValueError):
    pass


def _group(request: dict[str, Any]) -> str:
    group = request.get("group")
    if not isinstance(group, str) or not group or len(group) > MAX_GROUP:
        raise _Refused(f"group is a string of 1-{MAX_GROUP} characters")
    return group
