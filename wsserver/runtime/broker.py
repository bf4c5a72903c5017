"""Broadcasts between servers through Redis (``[cluster]``; see docs/cluster.md).

With ``[cluster]`` every worker talks to Redis itself; the master is not in the data path:

- publishing is one ``PUBLISH`` of the group's channel (:data:`CHANNEL_PREFIX` + group name)
  on a pooled connection; the publishing worker then delivers to its own members at once
  (:func:`wsserver.runtime.groups.publish`) and ignores the copy Redis sends back;
- one subscriber connection per worker ``SUBSCRIBE``\\ s a group's channel when the group's
  first local member joins and ``UNSUBSCRIBE``\\ s when the last one leaves (the groups
  membership hooks), and hands what arrives to :func:`~wsserver.runtime.groups.publish_local`;
- a subscriber that loses its connection reconnects with back-off and subscribes again to the
  channels of every group that has members here;
- Redis unavailable: :meth:`Broker.publish` raises :class:`BrokerUnavailable` (the endpoint's
  ``session.broadcast`` sees it) and nobody got the message.

A message travels in a compact binary envelope (:func:`encode_envelope`): one byte of version
and flags (bit 0: text), the publishing worker's 8-byte id, then the payload (UTF-8 for text).

Runs in a worker after gevent's monkey patching: redis-py's sockets are then cooperative.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Any

from wsserver.logs import log

if TYPE_CHECKING:
    from wsserver.config.schema import ClusterConfig

logger = logging.getLogger("wsserver.broker")

CHANNEL_PREFIX = "wsserver:group:"
CONTROL_PREFIX = "wsserver:worker:"  # a channel of the worker's own: the subscriber always has one
ENVELOPE = struct.Struct("!B8s")
VERSION = 0x10  # the high nibble of the first byte
FLAG_TEXT = 0x01
ORIGIN_SIZE = 8
BACKOFF_MIN = 0.1  # seconds before the first reconnection attempt
BACKOFF_MAX = 5.0


class BrokerUnavailable(Exception):
    """A broadcast could not be handed to the cluster's broker (Redis): nobody received it."""


class EnvelopeError(ValueError):
    """Bytes on a group channel that are not an envelope of this version."""


def encode_envelope(origin: bytes, message: str | bytes) -> bytes:
    if isinstance(message, str):
        return ENVELOPE.pack(VERSION | FLAG_TEXT, origin) + message.encode()
    return ENVELOPE.pack(VERSION, origin) + bytes(message)


def decode_envelope(data: bytes) -> tuple[bytes, str | bytes]:
    """``(origin, message)``; a text message comes back as ``str``."""
    if len(data) < ENVELOPE.size:
        raise EnvelopeError(f"envelope too short ({len(data)} bytes)")
    flags, origin = ENVELOPE.unpack_from(data)
    if flags & 0xF0 != VERSION or flags & 0x0E:
        raise EnvelopeError(f"unknown envelope version or flags 0x{flags:02x}")
    payload = data[ENVELOPE.size:]
    if flags & FLAG_TEXT:
        try:
            return origin, payload.decode()
        except UnicodeDecodeError:
            raise EnvelopeError("text message is not UTF-8") from None
    return origin, bytes(payload)


def channel_of(group: str) -> str:
    return CHANNEL_PREFIX + group


def connection_kwargs(cluster: ClusterConfig) -> dict[str, Any]:
    timeout = cluster.connect_timeout_ms / 1000
    kwargs: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_keepalive": True, "protocol": 2}
    if cluster.password_env:
        kwargs["password"] = os.environ.get(cluster.password_env) or None
    return kwargs


class Metrics:
    """The broker's Prometheus children (the worker's multiprocess files), labelled by node."""

    def __init__(self, node: str) -> None:
        from wsserver import metrics

        self.up = metrics.BROKER_UP.labels(node)
        self.publish_errors = metrics.BROKER_PUBLISH_ERRORS.labels(node)
        self.reconnects = metrics.BROKER_RECONNECTS.labels(node)


class Broker:
    """One worker's link to Redis: a publishing pool and one subscriber connection."""

    def __init__(self, cluster: ClusterConfig, deliver: Any = None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from wsserver.runtime import groups

        self.cluster = cluster
        self.node = cluster.node or socket.gethostname()
        self.origin = os.urandom(ORIGIN_SIZE)  # this worker's id in every envelope it publishes
        self.control = CONTROL_PREFIX + self.origin.hex()
        self._deliver = deliver or groups.publish_local
        self._redis = redis
        kwargs = connection_kwargs(cluster)
        no_retry = Retry(NoBackoff(), 0)  # a failure is reported at once; the subscriber retries itself
        self._pool = redis.ConnectionPool.from_url(
            cluster.broker, socket_timeout=cluster.connect_timeout_ms / 1000, retry=no_retry, **kwargs)
        self._client = redis.Redis(connection_pool=self._pool)
        self._sub_pool = redis.ConnectionPool.from_url(cluster.broker, socket_timeout=None, retry=no_retry, **kwargs)
        self._sub: Any = None  # the subscriber's connection while it is up
        self._greenlet: Any = None
        self._hub: Any = None  # set by start(): (un)subscribing from a thread goes through it
        self._hub_thread = 0
        self._native_get_ident: Any = None
        self._stopping = False
        self.up = False
        self.metrics = Metrics(self.node)
        self.metrics.up.set(0)

    # ---- life ------------------------------------------------------------------------------
    def start(self) -> None:
        """Install the groups hooks and start the subscriber (in its own greenlet)."""
        import gevent
        from gevent.monkey import get_original

        from wsserver.runtime import groups

        self._native_get_ident = get_original("_thread", "get_ident")
        self._hub_thread = self._native_get_ident()
        self._hub = gevent.get_hub()
        groups.set_relay(self.publish)
        groups.set_membership_hooks(self.subscribe, self.unsubscribe)
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        from wsserver.runtime import groups

        self._stopping = True
        groups.set_relay(None)
        groups.set_membership_hooks(None, None)
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        self._drop(self._sub)
        self._pool.disconnect()

    # ---- publishing ------------------------------------------------------------------------
    def publish(self, group: str, message: str | bytes) -> None:
        """The groups relay hook: one PUBLISH round trip, or :class:`BrokerUnavailable`."""
        try:
            self._client.publish(channel_of(group), encode_envelope(self.origin, message))
        except (self._redis.RedisError, OSError) as exc:
            self.metrics.publish_errors.inc()
            raise BrokerUnavailable(f"cannot publish to {self.cluster.broker}: {exc}") from exc

    # ---- subscribing -----------------------------------------------------------------------
    def subscribe(self, group: str) -> None:
        """Groups hook: the first member joined here. Never raises (the subscriber catches up)."""
        self._command("SUBSCRIBE", channel_of(group))

    def unsubscribe(self, group: str) -> None:
        """Groups hook: the last member left here."""
        self._command("UNSUBSCRIBE", channel_of(group))

    def _command(self, *args: str) -> None:
        if self._hub is not None and self._native_get_ident() != self._hub_thread:
            # A thread-mode handler joined or left: the socket belongs to the worker's hub.
            import gevent

            self._hub.loop.run_callback_threadsafe(gevent.spawn, self._command, *args)
            return
        conn = self._sub
        if conn is None:
            return  # down: on reconnection the subscriber subscribes to what has members then
        try:
            conn.send_command(*args, check_health=False)
        except (self._redis.RedisError, OSError):
            pass  # the subscriber's read fails too and reconnects

    def _run(self) -> None:
        import gevent

        delay = BACKOFF_MIN
        lost = False
        while not self._stopping:
            conn = self._sub_pool.make_connection()
            try:
                conn.connect()
                conn.send_command("SUBSCRIBE", self.control, check_health=False)
                self._sub = conn  # from now on the hooks send their (UN)SUBSCRIBEs themselves
                from wsserver.runtime import groups

                channels = [channel_of(g) for g in groups.local_groups()]
                if channels:
                    conn.send_command("SUBSCRIBE", *channels, check_health=False)
                self._set_up(True)
                if lost:
                    self.metrics.reconnects.inc()
                    log(logger, "info", "broker reconnected", node=self.node, broker=self.cluster.broker,
                        groups=len(channels))
                delay = BACKOFF_MIN
                self._read(conn)
            except (self._redis.RedisError, OSError) as exc:
                if self._stopping:
                    break
                if self.up or not lost:
                    log(logger, "warning", "broker connection lost" if self.up else "broker unavailable",
                        node=self.node, broker=self.cluster.broker, error=str(exc))
            finally:
                self._sub = None
                self._set_up(False)
                self._drop(conn)
            lost = True
            gevent.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _read(self, conn: Any) -> None:
        while True:
            reply = conn.read_response()
            if not isinstance(reply, list) or len(reply) != 3 or reply[0] not in (b"message", "message"):
                continue  # (un)subscribe confirmations
            try:
                origin, message = decode_envelope(reply[2])
            except EnvelopeError as exc:
                log(logger, "warning", "dropped a bad broker message", channel=str(reply[1]), error=str(exc))
                continue
            channel = reply[1].decode() if isinstance(reply[1], bytes) else reply[1]
            if origin == self.origin or not channel.startswith(CHANNEL_PREFIX):
                continue  # this worker's own publish: its members got it already
            self._deliver(channel[len(CHANNEL_PREFIX):], message)

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self.metrics.up.set(1 if up else 0)

    @staticmethod
    def _drop(conn: Any) -> None:
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:
                pass
