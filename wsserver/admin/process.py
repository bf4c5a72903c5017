"""The admin process: a child of the master, forked and supervised by it like a worker.

Why a process and not the master's own loop: serving the admin means checking scrypt
passwords (~0.1 s each), TLS handshakes, writing and fsyncing the config file, importing the
endpoint handlers to validate a change, and waiting for the workers' answers and for a reload
to complete. None of that may stall the master's loop, which relays broadcasts and watches
heartbeats; and the master must not run threads (a fork while a thread holds a lock can
deadlock the child). So the master forks this process (gevent is set up here, after the fork,
as in a worker) and talks to it over a Unix socketpair with the relay's framing:

- admin -> master ``REQUEST {"id", "op": "status" | "reload" | "sessions" | "close_session" |
  "revoke", ...}``;
- master -> admin ``REPLY {"id", ...}``: the answer; for ``sessions`` and ``close_session``
  the master answers ``{"id", "asked": [worker pids]}`` and forwards each asked worker's own
  ``REPLY {"id", "pid", ...}``, which :class:`MasterLink` gathers.

The master replaces this process after every completed reload (so it always runs the
configuration in force: its users, its TLS key, its address), on the same listening socket
when the address did not change. The old one stops accepting, finishes the requests in flight
(a reload it asked for included) and exits. It also exits when the master goes away.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from wsserver.logs import log
from wsserver.prefork import child, relay
from wsserver.protocol.address import format_address

if TYPE_CHECKING:
    from wsserver.config import Config

logger = logging.getLogger("wsserver.admin")

EXIT_BOOT = child.EXIT_BOOT
STOP_GRACE = 10.0  # after TERM: seconds for the requests in flight
# ... and for a connection accepted just before TERM, or kept alive, whose request may be on its
# way (the next click of an operator whose change replaced this process must not meet a reset
# connection). A client quiet for longer finds its kept-alive connection closed, as HTTP allows.
IDLE_GRACE = 1.0
STATUS_TIMEOUT = 5.0
GATHER_TIMEOUT = 3.0  # how long the workers get to answer a sessions request


class MasterUnavailable(Exception):
    """The master did not answer in time (or is gone)."""


@dataclass
class AdminSpec:
    """Everything the admin process gets from the master."""

    config: Config  # the configuration in force
    config_path: str | None
    sock: socket.socket  # the listening socket, bound by the master
    link: socket.socket  # this process's end of the socketpair
    master_pid: int
    secret: bytes  # signs console sessions; the same for every admin process of this master
    revoked: list[str] = field(default_factory=list)  # console sessions logged out
    log_file: str | None = None
    log_level: str = "info"
    log_format: str = "text"


def admin_tls_context(config: Config) -> Any:
    """The pyOpenSSL context for ``[admin.tls]``, or None for plain HTTP. Raises TLSConfigError."""
    tls = config.admin.tls
    if not tls.keystore:
        return None
    from wsserver.security.keystores import KeystoreError
    from wsserver.security.tls import TLSConfigError, build_server_context, tls_for_config

    material = tls_for_config(config)
    try:
        entry = material.keystores[tls.keystore].key(tls.key_alias)
        return build_server_context(entry, session_id=b"wsserver:admin")
    except (KeystoreError, KeyError, ValueError) as exc:
        raise TLSConfigError([f"{config.source}: admin.tls: {exc}"]) from None


class MasterLink:
    """The admin side of the socketpair: requests with ids, answers gathered per id."""

    def __init__(self, sock: socket.socket, on_gone: Any) -> None:
        import gevent
        from gevent import socket as gsocket
        from gevent.lock import Semaphore

        self.gevent = gevent
        self.sock = gsocket.socket(sock.family, sock.type, fileno=sock.detach())
        self.send_lock = Semaphore()
        # Ids unique across the admin processes of one master (answers go to all of them).
        self.ids = itertools.count(random.randrange(1, 2**40))
        self.waiting: dict[int, Any] = {}
        self.on_gone = on_gone
        self.on_replaced: Any = lambda: None  # a reload completed: the master replaces this process
        self.reload_timeout = 120.0
        gevent.spawn(self._read_loop)

    def _read_loop(self) -> None:
        reader = relay.FrameReader()
        while True:
            try:
                data = self.sock.recv(relay.RECV_SIZE)
            except OSError:
                data = b""
            if not data:
                self.on_gone("relay closed")
                return
            try:
                frames = list(reader.feed(data))
            except relay.RelayError as exc:
                log(logger, "error", "admin: bad frame from the master", error=str(exc))
                self.on_gone("relay error")
                return
            for kind, body, _raw in frames:
                if kind != relay.REPLY:
                    continue
                try:
                    message = relay.decode_json(body)
                except relay.RelayError:
                    continue
                # Other ids: another admin process's. No id: 0, never one of ours (they start at 1).
                queue = self.waiting.get(message.get("id", 0))
                if queue is not None:
                    queue.put(message)

    def _send(self, message: dict[str, Any]) -> None:
        with self.send_lock:
            try:
                self.sock.sendall(relay.encode_json(relay.REQUEST, message))
            except OSError as exc:
                raise MasterUnavailable(f"the master is gone: {exc}") from None

    def _ask(
        self, op: str, timeout: float, gather: bool = False, **fields: Any
    ) -> tuple[dict[str, Any], list]:
        from gevent.queue import Empty, Queue

        request_id = next(self.ids)
        queue: Queue = Queue()
        self.waiting[request_id] = queue
        try:
            self._send({"id": request_id, "op": op, **fields})
            try:
                first = queue.get(timeout=timeout)
            except Empty:
                raise MasterUnavailable(f"no answer from the master to {op!r} in {timeout:.0f}s") from None
            answers = []
            if gather:
                pending = set(first.get("asked", []))
                deadline = time.monotonic() + GATHER_TIMEOUT
                while pending:
                    try:
                        answer = queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except Empty:
                        break
                    pending.discard(answer.get("pid"))
                    answers.append(answer)
                first = dict(first, unanswered=sorted(pending))
            return first, answers
        finally:
            self.waiting.pop(request_id, None)

    # ---- what the admin application uses ----------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self._ask("status", STATUS_TIMEOUT)[0].get("status", {})

    def reload(self) -> dict[str, Any]:
        try:
            answer = self._ask("reload", self.reload_timeout)[0]
        except MasterUnavailable as exc:
            return {"result": "failed", "errors": [str(exc)]}
        if answer.get("result") == "success":
            self.on_replaced()
        return {k: v for k, v in answer.items() if k != "id"}

    def sessions(self, port: str | None = None, limit: int = 1000) -> dict[str, Any]:
        first, answers = self._ask("sessions", STATUS_TIMEOUT, gather=True, port=port, limit=limit)
        sessions = [s for a in answers for s in a.get("sessions", [])]
        total = sum(a.get("total", 0) for a in answers)
        return {"sessions": sessions, "total": total, "unanswered": first.get("unanswered", [])}

    def close_session(self, session_id: str, code: int, reason: str) -> bool:
        try:
            pid = int(session_id.split("-", 1)[0], 16)
        except ValueError:
            return False
        _, answers = self._ask(
            "close_session",
            STATUS_TIMEOUT,
            gather=True,
            pid=pid,
            session=session_id,
            code=code,
            reason=reason,
        )
        return any(a.get("closed") for a in answers)

    def revoke(self, nonce: str) -> None:
        self._send({"id": 0, "op": "revoke", "nonce": nonce})


def run(spec: AdminSpec) -> NoReturn:
    """The admin process's whole life after the fork; never returns."""
    child.run(lambda: _main(spec), "admin process crashed")


def _main(spec: AdminSpec) -> int:
    child.start("wsserver: admin", spec.log_file, spec.log_level, spec.log_format)
    import gevent
    from gevent.event import Event

    from wsserver.admin.api import AdminApp
    from wsserver.admin.auth import AdminAuth, admin_users
    from wsserver.admin.httpd import HTTPServer
    from wsserver.admin.store import ConfigStore
    from wsserver.security.tls import TLSConfigError

    try:
        tls_context = admin_tls_context(spec.config)
    except TLSConfigError as exc:
        for line in exc.errors:
            log(logger, "error", "admin: cannot use the TLS key", error=line)
        return EXIT_BOOT

    stop = Event()
    why: list[str] = []

    def stop_now(reason: str) -> None:
        why.append(reason)
        stop.set()

    def master_gone(reason: str) -> None:
        log(logger, "warning", "admin: the master is gone: stopping", why=reason)
        stop_now("master gone")

    link = MasterLink(spec.link, master_gone)
    link.reload_timeout = 2 * spec.config.server.worker_timeout + 90
    threadpool = gevent.get_hub().threadpool
    auth = AdminAuth(spec.config.users, spec.secret, run_hash=lambda fn, *args: threadpool.apply(fn, args))
    for nonce in spec.revoked:
        auth.revoke(nonce)
    app = AdminApp(ConfigStore(spec.config_path, link), link, auth, spec.config)
    server = HTTPServer(spec.sock, app, tls_context)
    link.on_replaced = server.close_after_answers
    gevent.signal_handler(signal.SIGTERM, stop_now, "TERM")
    gevent.signal_handler(signal.SIGQUIT, lambda: os._exit(0))

    def watch_parent() -> None:
        while not stop.is_set():
            if os.getppid() != spec.master_pid:
                master_gone("parent changed")
            gevent.sleep(1.0)

    gevent.spawn(watch_parent)
    server.start()
    host, port = server.sock.getsockname()[:2]
    log(
        logger,
        "info",
        "admin listening",
        address=f"{'https' if tls_context else 'http'}://{format_address(host, port)}/",
        users=",".join(admin_users(spec.config)),
    )
    stop.wait()
    server.stop_accepting()  # the next admin process accepts what arrives from now on
    now = time.monotonic()
    deadline, idle_deadline = now + STOP_GRACE, now + IDLE_GRACE
    while time.monotonic() < deadline and (server.busy or (server.idle and time.monotonic() < idle_deadline)):
        gevent.sleep(0.02)
    log(logger, "info", "admin process exiting", reason=why[0] if why else "-")
    return 0
