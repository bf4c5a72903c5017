"""An adapter = its settings + a balancer + a backend module. What the handshake calls.

    adapter = Adapter(settings)                       # after gevent's monkey-patching
    result = adapter.authenticate("alice", "pw", timeout=port.auth_timeout_ms / 1000)
    result.decision   # Decision.ACCEPTED | REJECTED | UNAVAILABLE
    result.http_status  # None (go on) | 401 | 503
    result.tried      # ((server, result, ms, detail), ...) in order

OCSP adapters check certificates instead: ``adapter.check_certificate(cert, issuer, chain)``.
Metrics hook in through ``observer(adapter, server, result, seconds, penalty)``, called after
every backend request (outside any lock).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsserver.adapters.balancer import (
    Attempt,
    Balancer,
    Decision,
    Outcome,
    ServerSnapshot,
    ServerState,
    Timeouts,
)
from wsserver.adapters.tls import TLSSetup, client_context
from wsserver.config.adapter_settings import AdapterSettings
from wsserver.logs import log

logger = logging.getLogger("wsserver.adapters")

Observer = Callable[[str, str, str, float, float], None]
MAX_USERNAME_CHARS = 1024
MAX_PASSWORD_CHARS = 4096
MAX_AIA_BALANCERS = 64


@dataclass(frozen=True)
class Tried:
    server: str
    result: str  # accepted | rejected | failed
    ms: float
    detail: str = ""


@dataclass(frozen=True)
class AuthResult:
    """``user`` is the name that was checked (the subject DN for OCSP); the backend's own name
    for the user, when it has one (an LDAP DN), is ``attributes["backend_user"]``."""

    decision: Decision
    user: str = ""
    tried: tuple[Tried, ...] = ()
    detail: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.decision is Decision.ACCEPTED

    @property
    def http_status(self) -> int | None:
        """What the handshake answers: None = continue, 401 = refused, 503 = backends unavailable."""
        return {Decision.ACCEPTED: None, Decision.REJECTED: 401, Decision.UNAVAILABLE: 503}[self.decision]


def make_backend(settings: AdapterSettings, context: ssl.SSLContext | None) -> Any:
    if settings.type == "ldap":
        from wsserver.adapters.ldap import LdapBackend

        return LdapBackend(settings, context)
    if settings.type == "radius":
        from wsserver.adapters.radius import RadiusBackend

        return RadiusBackend(settings)
    if settings.type == "http":
        from wsserver.adapters.http import HttpBackend

        return HttpBackend(settings, context)
    if settings.type == "ocsp":
        from wsserver.adapters.ocsp import OcspBackend

        return OcspBackend(settings, context)
    if settings.type == "gemalto":
        from wsserver.adapters.otp import OtpBackend

        return OtpBackend(settings, context)
    raise ValueError(f"unknown adapter type {settings.type!r}")


def needs_tls(settings: AdapterSettings) -> bool:
    return (
        settings.security_protocol == "tls"
        or any(s.url.lower().startswith(("ldaps:", "https:")) for s in settings.servers)
        or settings.type == "ocsp"
    )  # AIA responders may be https://


class Adapter:
    """Thread- and greenlet-safe; build it after gevent's monkey-patching (TLS contexts)."""

    def __init__(
        self,
        settings: AdapterSettings,
        *,
        backend: Any = None,
        now: Callable[[], float] = time.monotonic,
        observer: Observer | None = None,
        tls_context: ssl.SSLContext | None = None,
        tls_setup: TLSSetup | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.now = now
        self.observer = observer
        if tls_context is None and needs_tls(settings):
            tls_context = client_context(
                settings.truststore,
                settings.keystore,
                settings.key_alias,
                settings.tls_min_version,
                tls_setup,
            )
        self.tls_context = tls_context
        self.backend = backend if backend is not None else make_backend(settings, tls_context)
        self.balancer = (
            Balancer(settings.server_list(), settings.load_balancing, now) if settings.servers else None
        )
        self._aia: OrderedDict[tuple[str, ...], Balancer] = OrderedDict()
        self._aia_lock = threading.Lock()

    # --- password adapters ----------------------------------------------------------------

    def authenticate(self, username: str, password: str, *, timeout: float | None = None) -> AuthResult:
        """Check a user name and password against the backends within ``timeout`` seconds."""
        if self.settings.type == "ocsp":
            raise TypeError(f"adapter {self.name} is an OCSP adapter: use check_certificate()")
        problem = self._precheck(username, password)
        if problem:
            return self._finish(AuthResult(Decision.REJECTED, username, (), problem), local=True)
        deadline = None if timeout is None else self.now() + timeout

        def call(url: str, timeouts: Timeouts) -> Outcome:
            return self.backend.authenticate(url, username, password, timeouts)

        assert self.balancer is not None  # _check_servers() requires servers for every type but ocsp
        return self._balance(self.balancer, call, deadline, username)

    def _precheck(self, username: str, password: str) -> str:
        if not username:
            return "empty user name"
        if not password:
            return "empty password"  # an LDAP "unauthenticated bind" would succeed
        if len(username) > MAX_USERNAME_CHARS or len(password) > MAX_PASSWORD_CHARS:
            return "user name or password too long"
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in username):
            return "control character in user name"
        check = getattr(self.backend, "precheck", None)
        return check(username, password) if check else ""

    # --- OCSP -----------------------------------------------------------------------------

    def check_certificate(
        self, certificate: Any, issuer: Any = None, chain: Sequence[Any] = (), *, timeout: float | None = None
    ) -> AuthResult:
        """OCSP: is ``certificate`` (cryptography x509) good? ``chain`` helps find its issuer."""
        from wsserver.adapters.ocsp import aia_responders, find_issuer

        subject = certificate.subject.rfc4514_string()
        if issuer is None:
            issuer = find_issuer(certificate, [*chain, *self.backend.issuers])
        if issuer is None:
            return self._finish(
                AuthResult(Decision.REJECTED, subject, (), "issuer certificate not found"), local=True
            )
        cached = self.backend.cached(certificate, issuer)
        if cached is not None:
            decision = Decision.ACCEPTED if cached.result.value == "accepted" else Decision.REJECTED
            return self._finish(AuthResult(decision, subject, (), f"{cached.detail} (cached)"), local=True)
        balancer = self.balancer or self._aia_balancer(aia_responders(certificate))
        if balancer is None:
            result = AuthResult(
                Decision.UNAVAILABLE, subject, (), "no OCSP responder configured or in the AIA"
            )
            return self._finish(self._fail_open(result))
        deadline = None if timeout is None else self.now() + timeout

        def call(url: str, timeouts: Timeouts) -> Outcome:
            outcome = self.backend.check(url, certificate, issuer, timeouts)
            self.backend.remember(certificate, issuer, outcome)
            return outcome

        return self._balance(balancer, call, deadline, subject)

    def _aia_balancer(self, urls: tuple[str, ...]) -> Balancer | None:
        if not urls:
            return None
        with self._aia_lock:
            balancer = self._aia.get(urls)
            if balancer is None:
                balancer = Balancer([(u, 1) for u in urls], self.settings.load_balancing, self.now)
                self._aia[urls] = balancer
                while len(self._aia) > MAX_AIA_BALANCERS:
                    self._aia.popitem(last=False)
            self._aia.move_to_end(urls)
            return balancer

    def _fail_open(self, result: AuthResult) -> AuthResult:
        # parse_adapter() fills in the ocsp table when type = "ocsp"; the test narrows it.
        if (
            self.settings.type == "ocsp"
            and self.settings.ocsp is not None
            and self.settings.ocsp.fail_mode == "open"
            and result.decision is Decision.UNAVAILABLE
        ):
            return AuthResult(
                Decision.ACCEPTED,
                result.user,
                result.tried,
                f"{result.detail}; accepted because fail_mode = open",
                {"fail_open": True},
            )
        return result

    # --- common ---------------------------------------------------------------------------

    def _balance(
        self, balancer: Balancer, call: Callable[[str, Timeouts], Outcome], deadline: float | None, user: str
    ) -> AuthResult:
        def on_attempt(state: ServerState, attempt: Attempt) -> None:
            if self.observer is not None:
                try:
                    self.observer(
                        self.name, attempt.server, attempt.result.value, attempt.seconds, attempt.penalty
                    )
                except Exception:
                    logger.exception("adapter observer failed")

        outcome = balancer.run(call, deadline=deadline, on_attempt=on_attempt)
        tried = tuple(
            Tried(a.server, a.result.value, round(a.seconds * 1000.0, 3), a.detail) for a in outcome.attempts
        )
        if outcome.outcome is None:
            detail = "deadline reached" if outcome.reason == "deadline" else "every server failed"
            return self._finish(self._fail_open(AuthResult(Decision.UNAVAILABLE, user, tried, detail)))
        answer = outcome.outcome
        attributes = {k: v for k, v in answer.attributes.items() if k != "next_update"}
        if answer.user and answer.user != user:
            attributes["backend_user"] = answer.user  # e.g. the LDAP DN the user bound as
        return self._finish(AuthResult(outcome.decision, user, tried, answer.detail, attributes))

    def _finish(self, result: AuthResult, local: bool = False) -> AuthResult:
        fields: dict[str, Any] = {
            "adapter": self.name,
            "user": result.user,
            "result": result.decision.value,
            "tried": len(result.tried),
            "detail": result.detail,
        }
        if result.decision is Decision.UNAVAILABLE or result.attributes.get("fail_open"):
            servers = ",".join(f"{t.server}:{t.result}" for t in result.tried)
            log(logger, "warning", "adapter backends unavailable", servers=servers, **fields)
        else:
            log(logger, "debug", "adapter answered", local=local, **fields)
        return result

    def snapshot(self) -> list[ServerSnapshot]:
        """Per-server penalty and counts (configured servers, then AIA responders in use)."""
        found = self.balancer.snapshot() if self.balancer is not None else []
        with self._aia_lock:
            aia = list(self._aia.values())
        for balancer in aia:
            found += balancer.snapshot()
        return found


def build_adapters(settings: Iterable[AdapterSettings], **kwargs: Any) -> dict[str, Adapter]:
    """One Adapter per ``[[adapters]]`` entry, by name (``kwargs`` go to every Adapter)."""
    return {s.name: Adapter(s, **kwargs) for s in settings}
