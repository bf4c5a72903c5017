"""Broadcasts between servers through Redis (``[cluster]``; see docs/cluster.md).

With ``[cluster]`` every worker talks to Redis itself; the master is not in the data path:

- publishing is one ``PUBLISH`` of the group's channel (:class:`Names`: ``PREFIX:group:NAME``)
  on a pooled connection; the publishing worker then delivers to its own members at once
  (:meth:`wsserver.runtime.groups.Groups.publish`) and ignores the copy Redis sends back;
- one subscriber connection per worker ``SUBSCRIBE``\\ s a group's channel when the group's
  first local member joins and ``UNSUBSCRIBE``\\ s when the last one leaves (the groups
  membership hooks), and hands what arrives to :meth:`~wsserver.runtime.groups.Groups.publish_local`;
- a subscriber that loses its connection reconnects with back-off and subscribes again to the
  channels of every group that has members here (with history it then catches up: it reads
  each group's stream after the last offset it received, see :meth:`Broker._catch_up_group`);
- with ``presence_ttl_s`` the worker also keeps its members in each group's presence set
  (:mod:`wsserver.runtime.presence`);
- the worker tells its master of every change of its connection (``/readyz``);
- Redis unavailable: :meth:`Broker.publish` raises :class:`BrokerUnavailable` (the endpoint's
  ``session.broadcast`` sees it) and nobody got the message.

A message travels in a compact binary envelope (:func:`encode_envelope`): one byte of version
and flags (bit 0: text, bit 1: an offset follows), the publishing worker's 8-byte id, with bit 1
one byte of length and the offset (ASCII), then the payload (UTF-8 for text).

History (``history_size > 0``): publishing is one Lua script (:data:`PUBLISH_SCRIPT`, by
EVALSHA) that XADDs the envelope to the group's stream (``PREFIX:history:NAME``,
``MAXLEN ~ history_size``, EXPIRE ``history_ttl_s``) and PUBLISHes it with the stream id as its
offset, atomically: the channel's order is the stream's. The publishing worker then does not
deliver to its own members itself: they get the message from Redis like everyone else, so every
member of every node sees one order per group. :meth:`Broker.recover` reads what a group's
stream holds after an offset (:meth:`wsserver.runtime.groups.Groups.join` with ``since``).

Runs in a worker after gevent's monkey patching: redis-py's sockets are then cooperative.

Why one long module: publishing, the subscriber's read loop, history and the catch-up after a
reconnection share one connection state (what is subscribed, confirmed and delivered), which
is only consistent when one object owns it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsserver.logs import log
from wsserver.runtime.envelope import (
    FLAG_OFFSET,
    BrokerUnavailable,
    EnvelopeError,
    Names,
    decode_envelope,
    decode_message,
    encode_envelope,
    parse_offset,
)

if TYPE_CHECKING:
    from wsserver.config.schema import ClusterConfig
    from wsserver.runtime.groups import Groups

logger = logging.getLogger("wsserver.broker")

# KEYS[1] the group's stream; ARGV: history_size, history_ttl_s, the envelope without offset,
# its header (flags with FLAG_OFFSET, origin), the channel. Returns the stream id (the offset).
PUBLISH_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[3])
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
redis.call('PUBLISH', ARGV[5], ARGV[4] .. string.char(#id) .. id .. string.sub(ARGV[3], 10))
return id
"""
ORIGIN_SIZE = 8
MAX_SEQ = 2**64 - 1  # the largest sequence number of a stream id
BACKOFF_MIN = 0.1  # seconds before the first reconnection attempt
BACKOFF_MAX = 5.0


def connection_kwargs(cluster: ClusterConfig) -> dict[str, Any]:
    timeout = cluster.connect_timeout_ms / 1000
    kwargs: dict[str, Any] = {"socket_connect_timeout": timeout, "protocol": 2}
    if not cluster.broker.startswith("unix:"):
        kwargs["socket_keepalive"] = True  # a TCP option: a Unix socket connection refuses it
    if cluster.password_env:
        kwargs["password"] = os.environ.get(cluster.password_env) or None
    if cluster.tls_ca_file:
        kwargs["ssl_ca_certs"] = cluster.tls_ca_file
    return kwargs


def ping(cluster: ClusterConfig) -> tuple[bool, str]:
    """Whether the broker answers now (``wsserver check``): ``(True, "redis 7.0.15, 0.4 ms")``
    or ``(False, the error)``. Blocking; it needs no gevent."""
    import redis

    client = redis.Redis.from_url(
        cluster.broker, socket_timeout=cluster.connect_timeout_ms / 1000, **connection_kwargs(cluster)
    )
    try:
        started = time.perf_counter()
        client.ping()
        elapsed = (time.perf_counter() - started) * 1000
        version = client.info("server").get("redis_version", "?")
    except (redis.RedisError, OSError) as exc:
        return False, str(exc) or type(exc).__name__
    finally:
        client.close()
    return True, f"redis {version}, {elapsed:.1f} ms"


class Metrics:
    """The broker's Prometheus children (the worker's multiprocess files), labelled by node."""

    def __init__(self, node: str) -> None:
        from wsserver import metrics

        self.up = metrics.BROKER_UP.labels(node)
        self.publish_errors = metrics.BROKER_PUBLISH_ERRORS.labels(node)
        self.reconnects = metrics.BROKER_RECONNECTS.labels(node)
        self.published = metrics.BROKER_PUBLISHED.labels(node)
        self.publish_duration = metrics.BROKER_PUBLISH_DURATION.labels(node)
        self.received = metrics.BROKER_RECEIVED.labels(node)
        self.caught_up = metrics.BROKER_CAUGHT_UP.labels(node)
        self.gaps = metrics.BROKER_GAPS.labels(node)


class Broker:
    """One worker's link to Redis: a publishing pool and one subscriber connection."""

    def __init__(
        self,
        cluster: ClusterConfig,
        groups: Groups,
        deliver: Any = None,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.cluster = cluster
        self.node = cluster.node or socket.gethostname()
        self.origin = os.urandom(ORIGIN_SIZE)  # this worker's id in every envelope it publishes
        self.names = Names(cluster.prefix)
        self.control = self.names.control_prefix + self.origin.hex()
        self.groups = groups  # the worker's: start() installs the hooks, messages go to its members
        self._deliver = deliver or groups.publish_local
        self._redis = redis
        kwargs = connection_kwargs(cluster)
        no_retry = Retry(NoBackoff(), 0)  # a failure is reported at once; the subscriber retries itself
        self._pool = redis.ConnectionPool.from_url(
            cluster.broker, socket_timeout=cluster.connect_timeout_ms / 1000, retry=no_retry, **kwargs
        )
        self._client = redis.Redis(connection_pool=self._pool)
        self.history = cluster.history_size > 0
        self._script = self._client.register_script(PUBLISH_SCRIPT) if self.history else None
        # Group channels whose SUBSCRIBE was sent and not confirmed yet (a join with ``since``
        # waits for it), and an event set at every confirmation.
        self._pending: dict[str, int] = {}
        self._confirmed: Any = None
        self._sub_pool = redis.ConnectionPool.from_url(
            cluster.broker, socket_timeout=None, retry=no_retry, **kwargs
        )
        self._sub: Any = None  # the subscriber's connection while it is up
        # With history: the last offset this worker received per group with members here, the
        # highest received in any group, and after a reconnection the groups still to catch up
        # (channel -> the offset to read after) and those that did (group -> the last offset
        # read from the history: the same messages may still arrive on the subscriber).
        self._last: dict[str, str] = {}
        self._latest: str | None = None
        self._catch_up: dict[str, str] = {}
        self._floor: dict[str, tuple[int, int]] = {}
        self._greenlet: Any = None
        self._hub: Any = None  # set by start(): (un)subscribing from a thread goes through it
        self._hub_thread = 0
        self._native_get_ident: Any = None
        self._stopping = False
        self.up = False
        self._on_state = on_state  # told of every change of ``up`` (the worker tells its master)
        self.metrics = Metrics(self.node)
        self.metrics.up.set(0)
        self.presence: Any = None  # the members of groups on every node (wsserver.runtime.presence)
        if cluster.presence_ttl_s > 0:
            from wsserver.runtime.presence import Presence

            self.presence = Presence(
                self._client,
                self.names,
                self.node,
                self.origin.hex(),
                cluster.presence_ttl_s,
                (redis.RedisError, OSError),
                is_up=lambda: self.up,
                where=cluster.broker,
                io_timeout=2 * cluster.connect_timeout_ms / 1000,
            )

    # ---- life ------------------------------------------------------------------------------
    def start(self) -> None:
        """Install the groups hooks and start the subscriber (in its own greenlet)."""
        import gevent
        from gevent.monkey import get_original

        self._native_get_ident = get_original("_thread", "get_ident")
        self._hub_thread = self._native_get_ident()
        self._hub = gevent.get_hub()
        self.groups.set_relay(self.publish)
        self.groups.set_membership_hooks(self.subscribe, self.unsubscribe)
        self.groups.set_history(self)
        if self.presence is not None:
            self.presence.start()
            self.groups.set_presence(self.presence)
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stopping = True
        self.groups.set_relay(None)
        self.groups.set_membership_hooks(None, None)
        self.groups.set_history(None)
        if self.presence is not None:
            self.groups.set_presence(None)
            self.presence.stop()  # removes this worker's members (one round trip) before the pool goes
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        self._drop(self._sub)
        self._pool.disconnect()

    # ---- publishing ------------------------------------------------------------------------
    def publish(self, group: str, message: str | bytes) -> str | None:
        """The groups relay hook: one PUBLISH round trip, or :class:`BrokerUnavailable`.

        With history: one EVALSHA of :data:`PUBLISH_SCRIPT`; returns the message's offset, and
        the message comes back to this worker's members through the subscriber."""
        envelope = encode_envelope(self.origin, message)
        started = time.perf_counter()
        try:
            if self._script is None:
                self._client.publish(self.names.channel(group), envelope)
                offset = None
            else:
                header = bytes([envelope[0] | FLAG_OFFSET]) + self.origin
                offset = self._script(
                    keys=[self.names.history(group)],
                    args=[
                        self.cluster.history_size,
                        self.cluster.history_ttl_s,
                        envelope,
                        header,
                        self.names.channel(group),
                    ],
                )
        except (self._redis.RedisError, OSError) as exc:
            self.metrics.publish_errors.inc()
            raise BrokerUnavailable(f"cannot publish to {self.cluster.broker}: {exc}") from exc
        self.metrics.publish_duration.observe(time.perf_counter() - started)
        self.metrics.published.inc()
        if offset is None:
            return None
        return offset.decode() if isinstance(offset, bytes) else str(offset)

    # ---- history ---------------------------------------------------------------------------
    def recover(self, group: str, since: str) -> tuple[bool, list[tuple[str, str | bytes]]]:
        """``(complete, [(offset, message), ...])``: what the group's stream holds after
        ``since``, in order; ``complete`` is False when the stream no longer reaches back to
        the message right after ``since`` (trimmed, expired, or no history at all).
        :class:`BrokerUnavailable` when Redis cannot be read."""
        ms, seq = parse_offset(since)
        if not self.history:
            return False, []
        after = (ms, seq + 1) if seq < MAX_SEQ else (ms + 1, 0)
        key = self.names.history(group)
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.xrange(key, "-", "+", count=1)
            pipe.xrange(key, f"{after[0]}-{after[1]}", "+")
            first, entries = pipe.execute()
        except (self._redis.RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read history at {self.cluster.broker}: {exc}") from exc
        if not first:
            return False, []  # no stream: it expired, or nothing was ever published
        complete = parse_offset(_text(first[0][0])) <= after
        found = []
        for raw_id, fields in entries:
            data = fields.get(b"e", fields.get("e"))
            try:
                _, message = decode_envelope(data)
            except (EnvelopeError, TypeError):
                continue
            found.append((_text(raw_id), message))
        return complete, found

    def wait_subscribed(self, group: str, timeout: float | None = None, connected_only: bool = False) -> bool:
        """Wait until Redis confirmed this worker's SUBSCRIBE of ``group``'s channel (messages
        published from then on reach this worker); False on timeout or while disconnected
        (at once with ``connected_only``, else waiting for a reconnection within the timeout)."""
        import gevent
        from gevent.event import Event

        channel = self.names.channel(group)
        if connected_only and self._sub is None:
            return False
        deadline = gevent.get_hub().loop.now() + (
            self.cluster.connect_timeout_ms / 1000 if timeout is None else timeout
        )
        while self._sub is None or self._pending.get(channel, 0) > 0:
            remaining = deadline - gevent.get_hub().loop.now()
            if remaining <= 0:
                return False
            if self._confirmed is None:
                self._confirmed = Event()
            self._confirmed.wait(min(remaining, 0.05))
        return True

    # ---- subscribing -----------------------------------------------------------------------
    def subscribe(self, group: str) -> None:
        """Groups hook: the first member joined here. Never raises (the subscriber catches up)."""
        if self._sub is not None:
            channel = self.names.channel(group)
            self._pending[channel] = self._pending.get(channel, 0) + 1
        self._command("SUBSCRIBE", self.names.channel(group))

    def unsubscribe(self, group: str) -> None:
        """Groups hook: the last member left here."""
        self._last.pop(group, None)
        self._floor.pop(group, None)
        self._catch_up.pop(self.names.channel(group), None)
        self._command("UNSUBSCRIBE", self.names.channel(group))

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
                local = self.groups.local_groups()
                channels = [self.names.channel(g) for g in local]
                if lost and self.history:
                    self._catch_up = self._catch_up_points(local)
                self._pending = {}
                for channel in channels:
                    self._pending[channel] = self._pending.get(channel, 0) + 1
                if channels:
                    conn.send_command("SUBSCRIBE", *channels, check_health=False)
                self._set_up(True)
                if lost:
                    self.metrics.reconnects.inc()
                    log(
                        logger,
                        "info",
                        "broker reconnected",
                        node=self.node,
                        broker=self.cluster.broker,
                        groups=len(channels),
                    )
                delay = BACKOFF_MIN
                self._read(conn)
            except (self._redis.RedisError, OSError, BrokerUnavailable) as exc:
                if self._stopping:
                    break
                if self.up or not lost:
                    log(
                        logger,
                        "warning",
                        "broker connection lost" if self.up else "broker unavailable",
                        node=self.node,
                        broker=self.cluster.broker,
                        error=str(exc),
                    )
            finally:
                self._sub = None
                self._pending = {}
                self._set_up(False)
                self._drop(conn)
            lost = True
            gevent.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _read(self, conn: Any) -> None:
        while True:
            reply = conn.read_response()
            if not isinstance(reply, list) or len(reply) != 3:
                continue
            kind = _text(reply[0])
            if kind == "subscribe":
                channel = _text(reply[1])
                since = self._catch_up.pop(channel, None)
                if since is not None:
                    self._catch_up_group(channel, since)  # BrokerUnavailable: reconnect, try again
                self._on_subscribed(channel)
                continue
            if kind != "message":
                continue  # unsubscribe confirmations
            try:
                origin, message, offset = decode_message(reply[2])
            except EnvelopeError as exc:
                log(logger, "warning", "dropped a bad broker message", channel=str(reply[1]), error=str(exc))
                continue
            channel = _text(reply[1])
            prefix = self.names.channel_prefix
            if not channel.startswith(prefix):
                continue
            self.metrics.received.inc()
            if offset is None:
                if origin == self.origin:
                    continue  # this worker's own publish: its members got it already
                self._deliver(channel[len(prefix) :], message)
            else:
                group = channel[len(prefix) :]
                if self._floor:
                    floor = self._floor.get(group)
                    if floor is not None:
                        if parse_offset(offset) <= floor:
                            continue  # read from the history during the catch-up already
                        del self._floor[group]  # one order per group: the later ones are all greater
                self._last[group] = self._latest = offset
                self._deliver(group, message, offset)

    def _catch_up_points(self, local: list[str]) -> dict[str, str]:
        """After a reconnection: per group with members here, the offset after which its
        history holds what this worker may have missed. A group that received nothing yet
        reads from the millisecond of the latest offset received in any group (stream ids are
        Redis's clock): at worst a few messages of that millisecond from before it joined."""
        points = {}
        for group in local:
            last = self._last.get(group)
            if last is None and self._latest is not None:
                ms = parse_offset(self._latest)[0]
                last = f"{ms - 1}-{MAX_SEQ}" if ms else "0-0"
            if last is not None:
                points[self.names.channel(group)] = last
        return points

    def _catch_up_group(self, channel: str, since: str) -> None:
        """Deliver a group's messages after ``since`` from its history (this worker's
        subscriber was down meanwhile); the live ones already arriving are not lost: the
        SUBSCRIBE was confirmed before this read, and those the read returned are skipped."""
        group = channel[len(self.names.channel_prefix) :]
        complete, entries = self.recover(group, since)
        if not complete:
            self.metrics.gaps.inc()
            log(
                logger,
                "warning",
                "history no longer reaches back: members here missed messages",
                node=self.node,
                group=group,
                since=since,
            )
        for offset, message in entries:
            self._deliver(group, message, offset)
            self._last[group] = self._latest = offset
        if entries:
            self._floor[group] = parse_offset(entries[-1][0])
            self.metrics.caught_up.inc(len(entries))
            log(logger, "info", "caught up from history", node=self.node, group=group, messages=len(entries))

    def _on_subscribed(self, channel: str) -> None:
        count = self._pending.get(channel, 0)
        if count > 1:
            self._pending[channel] = count - 1
        elif count:
            del self._pending[channel]
        event, self._confirmed = self._confirmed, None
        if event is not None:
            event.set()

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self.metrics.up.set(1 if up else 0)
            if self._on_state is not None:
                self._on_state(up)

    @staticmethod
    def _drop(conn: Any) -> None:
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:
                pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
