"""Client authentication of an upgrade request: a pure decision, no sockets, no gevent.

``Authenticator.authenticate(request, address)`` answers with an :class:`AuthDecision`:

- 200 and the user (or None on a ``client_auth = "none"`` port without ``no_auth_user``);
- 401 with ``WWW-Authenticate`` when credentials are missing or wrong: unknown user, wrong
  password, bad token, bad/expired/foreign JWT all look the same from outside;
- 403 when a known user may not use this connection type, port or endpoint;
- 429 with ``Retry-After`` when the client address has used up its failed attempts.

The runtime calls it in three steps so each runs where it belongs (see
``wsserver/runtime/auth_step.py``): :meth:`gate` (rate limit, on the hub), :meth:`verify`
(the credentials: CPU-heavy hashes go through ``run_blocking``; safe to run on another
thread) and :meth:`finish` (count, rate-limit bookkeeping, the response).

Secrets are never kept in an outcome, counted or logged: reasons are fixed words and a user
name is reported only when it names a configured user (a password typed into the user
field must not end up in a log).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote_plus

from wsserver.protocol.basic_auth import BasicAuthError, parse_basic
from wsserver.security import passwords
from wsserver.security.jwt import JWTError, JWTVerifier
from wsserver.security.outcome import Outcome, RunBlocking
from wsserver.security.ratelimit import FailureLimiter, Limiter
from wsserver.security.users import User, UserTable

if TYPE_CHECKING:
    from wsserver.config import Config, PortConfig
    from wsserver.protocol import HandshakeRequest

__all__ = ["METHODS", "AuthDecision", "AuthEvent", "Authenticator", "Outcome", "client_auth_method"]

METHODS = ("none", "password", "token", "jwt", "certificate", "adapter")
REALM = "wsserver"


def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def client_auth_method(value: str) -> str:
    """The method family of a ``client_auth`` value: "adapter:corp" -> "adapter"."""
    return value.split(":", 1)[0]


@dataclass(frozen=True)
class AuthDecision:
    status: int  # 200 = go on; else answer the handshake with this status
    user: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "none"
    result: str = "ok"  # ok | anonymous | missing | invalid | forbidden | rate_limited | timeout | error
    reason: str = ""  # a fixed word for the log (e.g. "expired"), never sent to the client

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class AuthEvent:
    """One finished attempt, for metrics (wsserver_auth_attempts_total{port,method,result})."""

    port: str
    method: str
    result: str
    duration: float


class Authenticator:
    """The authentication rules of one port."""

    def __init__(
        self,
        port: PortConfig,
        users: UserTable,
        jwt: JWTVerifier | None = None,
        limiter: Limiter | None = None,
        clock: Callable[[], float] = time.time,
        observer: Callable[[AuthEvent], None] | None = None,
        adapter: Any = None,
    ) -> None:
        self.port = port
        self.users = users
        self.method = client_auth_method(port.client_auth)
        if self.method not in METHODS:
            raise ValueError(f"client_auth {port.client_auth!r} is not supported by this version")
        self.jwt = jwt
        if self.method == "jwt" and jwt is None:
            raise ValueError("client_auth = jwt needs a JWTVerifier")
        self.adapter = adapter  # wsserver.adapters.service.Adapter, for client_auth = "adapter:<name>"
        self.adapters: Mapping[str, Any] = {}
        if self.method == "adapter" and adapter is None:
            raise ValueError(f"client_auth = {port.client_auth} needs its adapter")
        self.limiter = limiter
        self.clock = clock
        self.observer = observer
        self.counters: Counter[tuple[str, str]] = Counter()
        self.no_auth_user = port.no_auth_user
        self.timeout = port.auth_timeout_ms / 1000
        basic = self.method in ("password", "adapter")
        scheme = "Basic" if basic else "Bearer"
        charset = ', charset="UTF-8"' if basic else ""
        self._challenge = (
            ("WWW-Authenticate", f'{scheme} realm="{REALM}"{charset}'),
            ("Cache-Control", "no-store"),
        )

    @classmethod
    def from_config(
        cls,
        port: PortConfig,
        config: Config,
        environ: Mapping[str, str] | None = None,
        users: UserTable | None = None,
        adapters: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Authenticator:
        """Build a port's rules; reads the JWT key (raises JWTKeyError if unusable)."""
        users = users if users is not None else UserTable(config.users)
        method = client_auth_method(port.client_auth)
        jwt = JWTVerifier.from_config(port.jwt, environ) if method == "jwt" else None
        limiter = FailureLimiter.from_config(port.auth_rate_limit)
        adapter = (adapters or {}).get(port.client_auth.partition(":")[2]) if method == "adapter" else None
        auth = cls(port, users, jwt, limiter, adapter=adapter, **kwargs)
        auth.adapters = dict(adapters or {})  # an OTP adapter's first_factor is another adapter
        return auth

    @property
    def trivial(self) -> bool:
        """No step at all: nobody is authenticated and nobody becomes a user."""
        return self.method == "none" and not self.no_auth_user

    # ---- the whole decision ------------------------------------------------------------------
    def authenticate(
        self,
        request: HandshakeRequest,
        address: str,
        run_blocking: RunBlocking = _direct,
        certificate: Any = None,
    ) -> AuthDecision:
        started = time.monotonic()
        refused = self.gate(address)
        if refused is not None:
            return refused
        return self.finish(
            self.verify(request, run_blocking, certificate), address, time.monotonic() - started
        )

    # ---- step 1: rate limit ------------------------------------------------------------------
    def gate(self, address: str) -> AuthDecision | None:
        """A 429 if ``address`` has no failed attempts left, else None (go on)."""
        if self.limiter is None or self.method == "none":
            return None
        wait = self.limiter.retry_after(address)
        if wait is None:
            return None
        return self._count(
            AuthDecision(429, None, (("Retry-After", str(wait)),), self.method, "rate_limited"), 0.0
        )

    # ---- step 2: the credentials ---------------------------------------------------------------
    def verify(
        self, request: HandshakeRequest, run_blocking: RunBlocking = _direct, certificate: Any = None
    ) -> Outcome:
        """Check the request's credentials and the user's limits. Touches no shared state.

        ``certificate``: the client's verified TLS certificate (cryptography x509), if any.
        """
        if self.method == "none":  # everyone is anonymous: the no-auth user, if any, else nobody
            outcome = Outcome("missing") if self.no_auth_user else Outcome("ok")
        elif self.method == "password":
            outcome = self._password(request, run_blocking)
        elif self.method == "token":
            outcome = self._token(request)
        elif self.method == "jwt":
            outcome = self._jwt(request)
        elif self.method == "certificate":
            outcome = self._certificate(certificate)
        else:
            outcome = self._adapter(request, run_blocking)
        if outcome.result == "missing" and self.no_auth_user:
            user = self.users.get(self.no_auth_user)
            outcome = (
                Outcome("anonymous", user, "no_auth_user")
                if user
                else Outcome("invalid", None, "no_auth_user")
            )
        if outcome.user is not None and not outcome.user.may_use(
            self.port.protocol, self.port.alias, request.path
        ):
            return Outcome("forbidden", outcome.user, "limits")
        return outcome

    def _password(self, request: HandshakeRequest, run_blocking: RunBlocking) -> Outcome:
        credentials = _basic_credentials(request)
        if isinstance(credentials, Outcome):
            return credentials
        name, secret = credentials
        user = self.users.get(name) if name else None
        if user is None or not user.password_hash:
            run_blocking(passwords.verify_dummy, secret, self.users.dummy_hash)  # as slow as a real check
            return Outcome("invalid", None, "unknown_user")
        if not run_blocking(passwords.verify, user.password_hash, secret):
            return Outcome("invalid", None, "password", user.name)
        return Outcome("ok", user)

    def _certificate(self, certificate: Any) -> Outcome:
        """The first of the certificate's subject CN and SANs that names a [[users]] entry."""
        if certificate is None:
            return Outcome("missing")
        from wsserver.security.tls import client_identity

        for name in client_identity(certificate).names():
            user = self.users.get(name)
            if user is not None:
                return Outcome("ok", user)
        return Outcome("invalid", None, "certificate_user")

    def _adapter(self, request: HandshakeRequest, run_blocking: RunBlocking = _direct) -> Outcome:
        """HTTP Basic credentials checked by the port's adapter (LDAP, RADIUS, HTTP backends)."""
        credentials = _basic_credentials(request)
        if isinstance(credentials, Outcome):
            return credentials
        name, secret = credentials
        if not name:  # a backend is never asked about the empty user
            return Outcome("invalid", None, "malformed")
        from wsserver.security import otp_auth

        if otp_auth.is_otp_adapter(self.adapter):  # GEMALTO: a password, then a one-time code
            return otp_auth.verify_two_factor(self, request, name, secret, run_blocking)
        result = self.adapter.authenticate(name, secret, timeout=self.timeout)
        if result.http_status == 503:
            return Outcome("unavailable", None, "backends")
        if not result.accepted:
            return Outcome("invalid", None, "adapter_reject", name)
        # A configured user of that name brings its limits; else the backend vouches for a plain user.
        return Outcome("ok", self.users.get(name) or User(name))

    def _token(self, request: HandshakeRequest) -> Outcome:
        token, why = self._bearer_or_query(request)
        if token is None:
            return Outcome(why)
        user = self.users.by_token(token)
        return Outcome("ok", user) if user else Outcome("invalid", None, "token")

    def _jwt(self, request: HandshakeRequest) -> Outcome:
        cfg = self.port.jwt
        token, why = self._bearer_or_query(request, bearer=cfg.bearer)
        if token is None and why == "missing" and cfg.cookie:
            token = _cookie(request, cfg.cookie)
        if token is None:
            return Outcome(why)
        assert self.jwt is not None
        try:
            claims = self.jwt.verify(token, self.clock())
        except JWTError as exc:
            return Outcome("invalid", None, f"jwt_{exc.reason}")
        name = claims.get(cfg.user_claim)
        if not isinstance(name, str) or not name:
            return Outcome("invalid", None, "jwt_user_claim")
        user = self.users.get(name)
        if user is None:
            if cfg.known_users_only:
                return Outcome("invalid", None, "unknown_user")
            user = User(name)
        return Outcome("ok", user)

    def _bearer_or_query(self, request: HandshakeRequest, bearer: bool = True) -> tuple[str | None, str]:
        """(credential, "") or (None, "missing" | "invalid")."""
        auth = _authorization(request)
        if auth is not None:
            scheme, credentials = auth
            if scheme != "bearer" or not bearer or not credentials:
                return None, "invalid"
            return credentials, ""
        param = self.port.token_query_param
        if param and request.query:
            values = parse_qs(request.query, keep_blank_values=True, max_num_fields=64).get(param)
            if values is not None:
                return (values[0], "") if len(values) == 1 and values[0] else (None, "invalid")
        return None, "missing"

    def public_query(self, query: str) -> str:
        """The query string an endpoint sees: without the credential parameter."""
        param = self.port.token_query_param
        if self.method == "adapter" and query:
            from wsserver.security.otp_auth import code_query_param, strip_query_param

            code_param = code_query_param(self.adapter)  # a one-time code is a credential too
            return strip_query_param(query, code_param) if code_param else query
        if not param or self.method not in ("token", "jwt") or not query:
            return query
        return "&".join(part for part in query.split("&") if unquote_plus(part.partition("=")[0]) != param)

    # ---- step 3: count and answer --------------------------------------------------------------
    def finish(self, outcome: Outcome, address: str, duration: float) -> AuthDecision:
        user = outcome.user.name if outcome.user is not None else (outcome.name or None)
        if outcome.result in ("ok", "anonymous"):
            decision = AuthDecision(200, user, (), self.method, outcome.result, outcome.reason)
        elif outcome.result == "forbidden":
            decision = AuthDecision(403, user, (), self.method, "forbidden", outcome.reason)
        elif outcome.result == "unavailable":  # every backend failed: not the client's fault, never 401
            decision = AuthDecision(
                503, None, (("Retry-After", "1"),), self.method, "unavailable", outcome.reason
            )
        else:
            if outcome.result == "invalid" and self.limiter is not None:
                self.limiter.failed(address)
            decision = AuthDecision(401, user, self._challenge, self.method, outcome.result, outcome.reason)
        return self._count(decision, duration)

    def timed_out(self, duration: float) -> AuthDecision:
        return self._count(AuthDecision(503, None, (("Retry-After", "1"),), self.method, "timeout"), duration)

    def failed_internally(self, duration: float) -> AuthDecision:
        return self._count(AuthDecision(500, None, (), self.method, "error"), duration)

    def _count(self, decision: AuthDecision, duration: float) -> AuthDecision:
        self.counters[(decision.method, decision.result)] += 1
        if self.observer is not None:
            self.observer(AuthEvent(self.port.alias, decision.method, decision.result, duration))
        return decision


def _basic_credentials(request: HandshakeRequest) -> tuple[str, str] | Outcome:
    """(user, password) of an HTTP Basic Authorization header, or the Outcome explaining why not."""
    header = request.header("authorization")
    if header is None:
        return Outcome("missing")
    try:
        return parse_basic(header)
    except BasicAuthError as exc:
        return Outcome("invalid", None, exc.reason)


def _authorization(request: HandshakeRequest) -> tuple[str, str] | None:
    value = request.header("authorization")
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    return scheme.lower(), credentials.strip()


def _cookie(request: HandshakeRequest, name: str) -> str | None:
    for key, value in request.headers:
        if key != "cookie":
            continue
        for pair in value.split(";"):
            cookie_name, eq, cookie_value = pair.strip().partition("=")
            if eq and cookie_name == name:
                cookie_value = cookie_value.strip()
                if len(cookie_value) >= 2 and cookie_value[0] == cookie_value[-1] == '"':
                    cookie_value = cookie_value[1:-1]
                return cookie_value or None
    return None
