"""The master's metrics listener: ``/metrics``, ``/healthz`` and ``/readyz`` on ``[metrics] bind:port``.

Served from the master's own poll loop by :class:`~wsserver.prefork.httpd.HTTPServer` — no
thread (a thread in a process that forks risks a fork while it holds a lock, the logging
lock for one) and no extra process: ``/healthz`` answering *is* the proof that the master's
loop turns, and ``/readyz`` reads the master's own state (its read-only view). A scrape costs the loop a few
milliseconds (reading the workers' metric files); every socket is non-blocking and bounded.

- ``/healthz``: 200 while the master runs its loop.
- ``/readyz``: 200 when every enabled port listens and at least the configured number of
  workers is ready; 503 while stopping (TERM's graceful window), when a port is not
  listening or workers are missing (booting, crashed and being replaced), and with
  ``[cluster] ready_requires_broker`` while a worker has no connection to the broker (each
  worker reports its connection's changes on its relay channel).
- ``/metrics``: the aggregated exposition (:class:`wsserver.metrics.MasterCollector`).

The allow list (``[metrics] allow``) applies to every path, checked when a connection is
accepted; basic auth (``user`` + ``password_hash`` or ``password_env``) applies to
``/metrics`` only, so probes need no credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from wsserver import metrics
from wsserver.logs import log
from wsserver.prefork.httpd import HTTPServer, Request, Response
from wsserver.prefork.service import MasterControl, MasterService, MasterView, WorkerView
from wsserver.protocol.basic_auth import BasicAuthError, parse_basic

if TYPE_CHECKING:
    from wsserver.config import Config

logger = logging.getLogger("wsserver.status")

REALM = "wsserver metrics"
FAILED_VERIFY_INTERVAL = 1.0  # at most one password hash check per second after a failure


class StatusServer(MasterService):
    """Owns the metrics directory, the scrape registry and the listener of one master."""

    def __init__(self) -> None:
        self.view: MasterView  # the master, from start() on
        self.dir: str | None = None
        self.http: HTTPServer | None = None
        self.listening_on: tuple[str, int] | None = None
        self.restarts = 0
        self.reloads: dict[str, int] = {}
        self.registry: Any = None
        self._networks: list[Any] = []
        self._auth: tuple[str, str, str] | None = None  # user, password_hash, password
        self._good_credentials: bytes | None = None  # sha256 of a header value that passed
        self._last_failed_verify = 0.0
        self._certificates: tuple[Config, list[tuple[str, str, float]]] | None = None

    # ---- life --------------------------------------------------------------------------------
    def start(self, view: MasterView, control: MasterControl) -> None:
        self.view = view
        self.setup()  # the metrics directory, before the first worker is forked
        self.configure(view.config)

    def setup(self) -> None:
        """Before the first fork: the private multiprocess directory."""
        self.dir = metrics.setup_multiprocess()
        log(logger, "debug", "metrics directory", path=self.dir)
        collector = metrics.MasterCollector(self.dir, self.state)
        self.registry = metrics.make_registry(collector)

    def configure(self, config: Config) -> None:
        """Listen as ``config.metrics`` says (again after a reload that changed it)."""
        cfg = config.metrics
        self._networks = [ipaddress.ip_network(a, strict=False) for a in cfg.allow]
        password = os.environ.get(cfg.password_env, "") if cfg.password_env else ""
        auth = (cfg.user, cfg.password_hash, password) if cfg.user else None
        if auth != self._auth:
            self._auth = auth
            self._good_credentials = None
        want = (cfg.bind, cfg.port) if cfg.enabled else None
        if want == self.listening_on:
            if self.http is not None:
                self.http.allow = self._allowed if cfg.allow else None  # the list may have changed
            return
        if self.http is not None:
            self.http.close()
            self.http = None
        self.listening_on = want
        if want is not None:
            self.http = HTTPServer(self.handle, name="metrics", allow=self._allowed if cfg.allow else None)
            self.http.listen(*want)

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        self.listening_on = None
        if self.dir is not None:
            metrics.remove_multiprocess_dir(self.dir)
            self.dir = None

    def close_in_child(self) -> None:
        if self.http is not None:
            self.http.close_in_child()

    # ---- the master's loop -------------------------------------------------------------------
    def registrations(self) -> list[tuple[int, int]]:
        return self.http.registrations() if self.http is not None else []

    def owns(self, fd: int) -> bool:
        return self.http is not None and self.http.owns(fd)

    def on_event(self, fd: int, events: int) -> None:
        if self.http is not None:
            self.http.on_event(fd, events)

    def next_deadline(self) -> float | None:
        return self.http.next_deadline() if self.http is not None else None

    def tick(self, now: float) -> None:
        if self.http is not None:
            self.http.tick(now)

    # ---- what the master reports ---------------------------------------------------------------
    def on_config(self, config: Config) -> None:
        self.configure(config)

    def reload_result(self, result: str, errors: list[str]) -> None:
        self.reloads[result] = self.reloads.get(result, 0) + 1

    def on_worker_exit(self, worker: WorkerView, how: str, unexpected: bool) -> None:
        if unexpected:
            self.restarts += 1
        if self.dir is not None:  # its live gauges go, its counters stay
            try:
                metrics.process_dead(worker.pid, self.dir)
            except OSError as exc:
                log(
                    logger,
                    "warning",
                    "cannot archive a dead worker's metrics",
                    pid=worker.pid,
                    error=str(exc),
                )

    # ---- requests ----------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])
        if request.path == "/healthz":
            return Response(200, b"ok\n")
        if request.path == "/readyz":
            ready, why = self.readiness()
            return Response(200 if ready else 503, f"{why}\n".encode())
        if request.path == "/metrics":
            if not self._authorized(request.headers.get("authorization")):
                return Response(
                    401,
                    b"unauthorized\n",
                    headers=[("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')],
                )
            body, content_type = metrics.render(self.registry, request.headers.get("accept", ""))
            return Response(200, body, content_type)
        return Response(404, b"not found: /metrics, /healthz, /readyz\n")

    def readiness(self) -> tuple[bool, str]:
        view = self.view
        if view.stopping:
            return False, "stopping"
        config = view.config
        for port in config.active_ports():
            if not view.listening(port):
                return False, f"port {port.alias} is not listening"
        serving = [w for w in view.workers if w.ready and w.state == "active"]
        if len(serving) < view.target:
            return False, f"{len(serving)} of {view.target} workers ready"
        cluster = config.cluster
        if cluster is not None and cluster.ready_requires_broker:
            cut_off = sum(1 for w in serving if not w.broker_up)
            if cut_off:
                return False, f"{cut_off} of {len(serving)} workers not connected to the broker"
        return True, f"ready: {len(serving)} workers"

    def _allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks)

    def _authorized(self, header: str | None) -> bool:
        if self._auth is None:
            return True
        if not header:
            return False
        digest = hashlib.sha256(header.encode("latin-1", "replace")).digest()
        if self._good_credentials is not None and hmac.compare_digest(digest, self._good_credentials):
            return True
        try:
            user, password = parse_basic(header)
        except BasicAuthError:
            return False
        name, password_hash, plain = self._auth
        if not hmac.compare_digest(user.encode(), name.encode()):
            return False
        if password_hash:
            # A hash check is slow on purpose and runs in the master's loop: after a failure,
            # refuse without checking for a moment (a correct, cached scraper is unaffected).
            now = time.monotonic()
            if now - self._last_failed_verify < FAILED_VERIFY_INTERVAL:
                return False
            from wsserver.security.passwords import verify

            ok = verify(password_hash, password)
            if not ok:
                self._last_failed_verify = now
        else:
            # A password_env that is not UTF-8 matches no (UTF-8) Basic password rather than raising.
            ok = bool(plain) and hmac.compare_digest(
                password.encode(), plain.encode("utf-8", "surrogateescape")
            )
        if ok:
            self._good_credentials = digest
        return ok

    # ---- the scrape's view of the master ------------------------------------------------------
    def state(self) -> metrics.MasterState:
        view = self.view
        workers = []
        for w in view.workers:
            state = w.state if w.state != "active" else ("ready" if w.ready else "starting")
            workers.append(metrics.WorkerInfo(w.pid, w.slot, w.gen, state))
        return metrics.MasterState(
            workers=workers,
            target=view.target,
            restarts=self.restarts,
            reloads=dict(self.reloads),
            certificates=self._certificates_of(view.config),
        )

    def _certificates_of(self, config: Config) -> list[tuple[str, str, float]]:
        if self._certificates is None or self._certificates[0] is not config:
            try:
                found = metrics.certificates_of(config)
            except Exception as exc:
                log(logger, "warning", "cannot read certificate expiry dates", error=str(exc))
                found = []
            self._certificates = (config, found)
        return self._certificates[1]
