"""The master's listening sockets: bound once, kept across reloads, handed to the workers.

A generation's sockets are keyed by ``(bind, port, slot)``. With shared sockets (the default)
every worker accepts on slot 0; with ``reuse_port`` each worker slot has its own
``SO_REUSEPORT`` socket, bound when a worker of that slot is first forked. A reload keeps the
socket of every address the new configuration still serves (the kernel's backlog and the old
workers' accepts carry on undisturbed) and binds only the new ones.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

from wsserver.config import Config, PortConfig
from wsserver.logs import log
from wsserver.protocol.address import format_peer
from wsserver.runtime.listeners import BoundListener, bind_listener, effective_backlog

logger = logging.getLogger("wsserver.arbiter")

ListenKey = tuple[str, int, int]  # (bind, port, slot); slot is 0 unless reuse_port
Sockets = dict[ListenKey, BoundListener]


def bind_all(
    config: Config, slots: int, reuse_port: bool, have: Sockets
) -> tuple[Sockets, list[BoundListener]]:
    """The sockets for ``config``: those of ``have`` at the same address are kept, the others
    bound now (``slots`` of each with ``reuse_port``, else one). Returns (sockets, newly bound);
    nothing stays bound on error."""
    sockets: Sockets = {}
    opened: list[BoundListener] = []
    try:
        for port in config.active_ports():
            for slot in range(slots if reuse_port else 1):
                key = (port.bind, port.port, slot)
                old = have.get(key)
                if old is not None:
                    sockets[key] = renamed(old, port)
                else:
                    sockets[key] = bind_listener(port, reuse_port=reuse_port)
                    opened.append(sockets[key])
    except OSError:
        close_sockets(opened)
        raise
    for port in config.active_ports():
        listener = sockets[(port.bind, port.port, 0)]
        log(
            logger,
            "info",
            "listening",
            port=port.alias,
            address=format_peer(listener.address),
            backlog=listener.effective_backlog,
        )
    return sockets, opened


def listeners_for(config: Config, sockets: Sockets, slot: int, reuse_port: bool) -> list[BoundListener]:
    """The sockets a worker in ``slot`` accepts on (binding reuse_port ones lazily into ``sockets``)."""
    slot = slot if reuse_port else 0
    listeners = []
    for port in config.active_ports():
        key = (port.bind, port.port, slot)
        if key not in sockets:
            sockets[key] = bind_listener(port, reuse_port=True)
        listeners.append(sockets[key])
    return listeners


def of_port(sockets: Sockets, port: PortConfig) -> list[BoundListener]:
    """Every socket (one per slot) of ``port``'s address."""
    return [bl for key, bl in sockets.items() if key[:2] == (port.bind, port.port)]


def unused_slots(sockets: Sockets, target: int, used: set[int]) -> list[ListenKey]:
    """reuse_port: the keys of slots at or past ``target`` that no worker uses (after TTOU)."""
    return [key for key in sockets if key[2] >= target and key[2] not in used]


def apply_backlogs(config: Config, sockets: Sockets) -> None:
    """A changed backlog applies to a kept socket too (``listen`` again with the new value)."""
    for port in config.active_ports():
        for listener in of_port(sockets, port):
            if listener.sock.fileno() >= 0:
                listener.sock.listen(port.backlog)


def close_sockets(listeners: Iterable[BoundListener]) -> None:
    for listener in listeners:
        try:
            listener.sock.close()
        except OSError:
            pass


def close_all_except(socket_sets: Iterable[Sockets], keep: Iterable[BoundListener]) -> None:
    """In a new child: close the inherited listening sockets it does not serve on."""
    kept = {id(listener.sock) for listener in keep}
    for sockets in socket_sets:
        for listener in sockets.values():
            if id(listener.sock) not in kept:
                listener.sock.close()


def renamed(listener: BoundListener, port: PortConfig) -> BoundListener:
    """The same socket under the port's (possibly new) alias and backlog."""
    return dataclasses.replace(
        listener,
        alias=port.alias,
        requested_backlog=port.backlog,
        effective_backlog=effective_backlog(port.backlog),
    )
