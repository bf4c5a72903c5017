"""The admin process as the master sees it: bind its address, fork it, keep it alive, answer it.

The admin API and console run in a child process (see :mod:`wsserver.admin.process` for why);
the master's side is this object, a :class:`~wsserver.prefork.service.MasterService` that the
command line hands to the master and its loop drives like the metrics listener:
``registrations`` / ``on_event`` in ``poll()``, ``tick`` and ``next_deadline`` for its timers,
``on_child_exit`` when a child exits, ``reload_result`` when a reload ends, ``close_in_child``
in every fork, ``stop`` at the end. It reads the master through its read-only view and acts on
it through the view's few commands (reload, a frame to the workers, closing the master's
descriptors in the admin process it forks).
Nothing here blocks: the admin's requests are answered from the master's state at once, or
forwarded to the workers (whose answers go back to the admin process unchanged), or, for a
reload, answered when the reload completes or fails.

The admin process runs when ``[admin] enabled`` and at least one ``[[users]]`` entry may
administer (``connection_types`` allowing ``admin``, and a ``password_hash``): an admin
listener nobody can log in to is not opened. It is replaced after every completed reload, so
it always runs the configuration in force. The listening socket stays here (bound again only
when ``[admin] bind`` or ``port`` changes): while one admin process stops and the next starts,
connections wait in its backlog instead of being refused.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wsserver.config import PortConfig
from wsserver.logs import log
from wsserver.prefork import relay
from wsserver.prefork.child import fork as fork_child
from wsserver.prefork.service import MasterControl, MasterService, MasterView, WorkerView
from wsserver.protocol.address import format_peer
from wsserver.runtime.listeners import BoundListener, bind_listener
from wsserver.version import __version__

if TYPE_CHECKING:
    from wsserver.config import Config

logger = logging.getLogger("wsserver.arbiter")

RETRY_LISTEN = 10.0  # seconds between attempts to bind the admin address when it was taken
RESPAWN_BASE = 0.5  # back-off after the admin process died; doubles up to RESPAWN_MAX
RESPAWN_MAX = 30.0
STOP_TIMEOUT = 12.0  # a replaced admin process finishes its requests in flight, then SIGKILL
REVOKED_MAX = 4096


@dataclass
class AdminChild:
    pid: int
    channel: relay.Channel
    started: float
    state: str = "active"  # active | stopping
    kill_at: float | None = None


class AdminSupervisor(MasterService):
    def __init__(self) -> None:
        self.view: MasterView  # the master, from start() on
        self.control: MasterControl
        self.secret = os.urandom(32)  # signs console sessions; inherited by every admin process
        self.revoked: list[str] = []  # console sessions logged out (handed to new admin processes)
        self.config: Config | None = None  # what the admin process should run; None = no admin
        self.listener: BoundListener | None = None
        self.address: tuple[str, int] | None = None
        self.retry_at: float | None = None
        self.children: dict[int, AdminChild] = {}
        self.spawn_after = 0.0
        self.failures = 0
        self.waiters: list[tuple[int, Any]] = []  # (admin pid, request id) waiting for this reload
        self.next_waiters: list[tuple[int, Any]] = []  # ... for the reload after the one running
        self.reload_wanted = False
        self.keep: set[int] = set()  # in a new admin process: the descriptors it keeps
        self._said_off = False

    def start(self, view: MasterView, control: MasterControl) -> None:
        self.view, self.control = view, control
        self.configure(view.config)

    # ---- configuration ---------------------------------------------------------------------
    def configure(self, config: Config) -> None:
        """Run the admin process ``config`` asks for (at start and after each completed reload)."""
        from wsserver.admin.auth import admin_users

        users = admin_users(config)
        if not config.admin.enabled or not users:
            if config.admin.enabled and not self._said_off:
                log(
                    logger,
                    "info",
                    "admin API off: no [[users]] entry with a password_hash may administer "
                    '(connection_types with "admin")',
                )
                self._said_off = True
            self.config = None
            self._stop_children()
            self._close_listener()
            return
        self._said_off = False
        implicit = [u.name for u in config.users if u.name in users and not u.connection_types]
        if implicit:
            log(
                logger,
                "warning",
                "admin: users with empty connection_types (= all) may administer; list "
                "connection_types to limit them",
                users=",".join(implicit),
            )
        self.config = config
        address = (config.admin.bind, config.admin.port)
        if address != self.address:
            self._close_listener()
            self.address = address
            self._try_listen()
        self._stop_children()  # replaced by one running ``config`` (tick spawns it)
        self.spawn_after = 0.0

    def _try_listen(self) -> None:
        assert self.address is not None
        bind, port = self.address
        try:
            self.listener = bind_listener(PortConfig(alias="admin", bind=bind, port=port, backlog=128))
        except OSError as exc:
            self.listener = None
            if self.retry_at is None:
                log(
                    logger,
                    "error",
                    f"admin endpoint cannot listen; retrying every {RETRY_LISTEN:.0f}s",
                    error=exc.strerror or str(exc),
                )
            self.retry_at = time.monotonic() + RETRY_LISTEN
            return
        self.retry_at = None

    def _close_listener(self) -> None:
        if self.listener is not None:
            self.listener.sock.close()
        self.listener = None
        self.address = None
        self.retry_at = None

    # ---- the master's loop ---------------------------------------------------------------------
    def registrations(self) -> list[tuple[int, int]]:
        regs = []
        for child in self.children.values():
            if not child.channel.closed:
                regs.append(
                    (child.channel.fileno(), select.POLLIN | (select.POLLOUT if child.channel.outbuf else 0))
                )
        return regs

    def on_event(self, fd: int, events: int) -> None:
        child = next(
            (c for c in self.children.values() if not c.channel.closed and c.channel.fileno() == fd), None
        )
        if child is None:
            return
        if events & select.POLLOUT:
            child.channel.flush()
        if not events & (select.POLLIN | select.POLLHUP | select.POLLERR):
            return
        try:
            frames = child.channel.receive()
        except relay.RelayError as exc:
            log(logger, "error", "bad relay frame from the admin process", pid=child.pid, error=str(exc))
            child.channel.close()
            return
        for kind, body, _raw in frames:
            if kind != relay.REQUEST:
                continue
            try:
                self.handle(child, relay.decode_json(body))
            except relay.RelayError as exc:
                log(logger, "error", "bad request from the admin process", pid=child.pid, error=str(exc))

    def next_deadline(self) -> float | None:
        times = [c.kill_at for c in self.children.values() if c.kill_at is not None]
        if self.retry_at is not None:
            times.append(self.retry_at)
        if self.reload_wanted:
            times.append(0.0)
        if self._needs_child():
            times.append(self.spawn_after)
        return min(times) if times else None

    def tick(self, now: float) -> None:
        for child in self.children.values():
            if child.kill_at is not None and now >= child.kill_at:
                child.kill_at = None
                log(logger, "warning", "admin process did not exit in time; killing", pid=child.pid)
                _kill(child.pid, signal.SIGKILL)
        if (
            self.config is not None
            and self.listener is None
            and self.retry_at is not None
            and now >= self.retry_at
        ):
            self._try_listen()
        if self.reload_wanted:
            self.reload_wanted = False
            self.control.reload()  # waiters are answered by reload_result
        if self._needs_child() and now >= self.spawn_after:
            self.spawn()

    def _needs_child(self) -> bool:
        return (
            self.config is not None
            and self.listener is not None
            and not self.view.stopping
            and not any(c.state == "active" for c in self.children.values())
        )

    # ---- requests from the admin process -------------------------------------------------------
    def handle(self, child: AdminChild, message: dict[str, Any]) -> None:
        op, request_id = message.get("op"), message.get("id")
        if op == "status":
            child.channel.send(relay.encode_json(relay.REPLY, {"id": request_id, "status": self.status()}))
        elif op == "reload":
            if self.view.stopping:
                self._answer_reload((child.pid, request_id), "failed", ["the server is stopping"])
            elif self.view.reloading:
                self.next_waiters.append((child.pid, request_id))
                self.reload_wanted = True  # marks the running reload to reload again
            else:
                self.waiters.append((child.pid, request_id))
                self.reload_wanted = True
        elif op in ("sessions", "close_session"):
            pid = message.get("pid")
            pids = ([pid] if isinstance(pid, int) else []) if op == "close_session" else None
            asked = self.control.send_to_workers(relay.encode_json(relay.REQUEST, message), pids)
            child.channel.send(relay.encode_json(relay.REPLY, {"id": request_id, "asked": asked}))
        elif op == "revoke":
            self.revoked.append(str(message.get("nonce", "")))
            del self.revoked[:-REVOKED_MAX]
        else:
            child.channel.send(
                relay.encode_json(relay.REPLY, {"id": request_id, "error": f"unknown op {op!r}"})
            )

    def on_worker_message(self, worker: WorkerView, kind: int, body: bytes, raw: bytes) -> None:
        """A worker's answer to a forwarded request: to the admin processes (the asker knows its id)."""
        if kind != relay.REPLY:
            return
        for child in self.children.values():
            child.channel.send(raw)

    def reload_result(self, result: str, errors: list[str]) -> None:
        """A reload ended ("success", "invalid" or "failed"): answer the admin's waiting requests."""
        waiters, self.waiters, self.next_waiters = self.waiters, self.next_waiters, []
        gen = self.view.generation
        for waiter in waiters:
            self._answer_reload(waiter, result, errors, gen)
        if result == "success":
            self.configure(self.view.config)

    def _answer_reload(self, waiter: tuple[int, Any], result: str, errors: list[str], gen: int = 0) -> None:
        child = self.children.get(waiter[0])
        if child is not None:
            child.channel.send(
                relay.encode_json(
                    relay.REPLY, {"id": waiter[1], "result": result, "errors": errors, "gen": gen}
                )
            )

    def status(self) -> dict[str, Any]:
        """The live state the admin shows: master, workers, per-port listening and connections."""
        view = self.view
        ports: dict[str, dict[str, Any]] = {}
        for port in view.config.ports:
            listening = sorted({format_peer(address) for address in view.listening(port)})
            ports[port.alias] = {"listening": listening, "connections": view.port_connections(port.alias)}
        workers = []
        for w in sorted(view.workers, key=lambda w: (w.gen, w.slot)):
            per_port = view.worker_connections(w)
            workers.append(
                {
                    "pid": w.pid,
                    "gen": w.gen,
                    "slot": w.slot,
                    "state": w.state,
                    "ready": w.ready,
                    "connections": sum(per_port.values()),
                    "ports": per_port,
                }
            )
        master = {
            "pid": view.pid,
            "gen": view.generation,
            "version": __version__,
            "workers": view.target,
            "reloading": view.reloading,
            "config": view.config_path or "<built-in>",
        }
        return {"master": master, "workers": workers, "ports": ports}

    # ---- the admin process -----------------------------------------------------------------------
    def spawn(self) -> None:
        view = self.view
        config = self.config
        assert config is not None and self.listener is not None
        master_end, child_end = relay.socketpair()
        listener = self.listener

        def in_admin_process() -> None:
            master_end.close()
            self.keep = {listener.sock.fileno(), child_end.fileno()}
            self.control.close_in_child()
            from wsserver.admin.process import AdminSpec, run

            logs = view.log_settings(config)
            run(
                AdminSpec(
                    config=config,
                    config_path=view.config_path,
                    sock=listener.sock,
                    link=child_end,
                    master_pid=view.pid,
                    secret=self.secret,
                    revoked=list(self.revoked),
                    log_file=logs.file,
                    log_level=logs.level,
                    log_format=logs.format,
                )
            )

        pid = fork_child(in_admin_process)
        child_end.close()
        self.children[pid] = AdminChild(pid, relay.Channel(master_end), time.monotonic())
        log(logger, "info", "admin process started", pid=pid)

    def on_child_exit(self, pid: int, how: str) -> bool:
        """A child exited: True if it was an admin process (then respawned after a back-off)."""
        child = self.children.pop(pid, None)
        if child is None:
            return False
        child.channel.close()
        if child.state == "active" and not self.view.stopping:
            self.failures = self.failures + 1 if time.monotonic() - child.started < 10 else 1
            delay = min(RESPAWN_BASE * 2 ** (self.failures - 1), RESPAWN_MAX)
            self.spawn_after = time.monotonic() + delay
            log(logger, "warning", "admin process died", pid=pid, how=how, respawn_in_s=round(delay, 2))
        else:
            log(logger, "info", "admin process exited", pid=pid, how=how)
        for waiters in (self.waiters, self.next_waiters):
            waiters[:] = [w for w in waiters if w[0] != pid]
        return True

    def _stop_children(self) -> None:
        for child in self.children.values():
            if child.state == "active":
                child.state = "stopping"
                child.kill_at = time.monotonic() + STOP_TIMEOUT
                _kill(child.pid, signal.SIGTERM)

    def close_in_child(self) -> None:
        """In any forked child: close the admin's descriptors (but those a new admin keeps)."""
        socks = [c.channel.sock for c in self.children.values()]
        if self.listener is not None:
            socks.append(self.listener.sock)
        for sock in socks:
            if sock.fileno() >= 0 and sock.fileno() not in self.keep:
                sock.close()

    def stop(self) -> None:
        """The master stops: TERM the admin processes, wait a little, then SIGKILL."""
        self._stop_children()
        deadline = time.monotonic() + 3.0
        while self.children and time.monotonic() < deadline:
            for pid in list(self.children):
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = pid, 0
                if done:
                    self.on_child_exit(pid, f"status {status}")
            time.sleep(0.02)
        for pid in list(self.children):
            _kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.on_child_exit(pid, "signal SIGKILL")
        self._close_listener()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
