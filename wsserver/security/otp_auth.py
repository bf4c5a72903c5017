"""A port whose ``client_auth`` names a GEMALTO adapter: the one-time code, after the password.

What the client sends (HTTP Basic always carries the user name):

- ``code_from = "append"`` (SafeNet agents' default): the Basic password is the password
  followed by the code, its last ``otp_length`` characters. Works with every client, browsers
  included (``https://user:pass@`` URLs or the browser's Basic prompt);
- ``"query"``: the code in a query parameter (``wss://host/path?otp=123456``), which a browser's
  ``new WebSocket(url)`` can send; endpoints never see that parameter;
- ``"header"``: the code in a header such as ``X-OTP`` (non-browser clients only: the browser
  WebSocket API cannot set headers).

``first_factor`` says who checks the password: ``""`` = the OTP server (it gets password +
code, as SafeNet's and privacyIDEA's PIN + OTP), ``"users"`` = a ``[[users]]`` password hash,
else another adapter (LDAP, RADIUS, HTTP). The code is checked only after the password passed,
so a wrong password never spends a one-time code. A backend outage in either step is a 503.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote_plus

from wsserver.adapters.otp import code_problem, split_secret
from wsserver.security import passwords
from wsserver.security.outcome import Outcome, RunBlocking
from wsserver.security.users import User, UserTable

if TYPE_CHECKING:
    from wsserver.protocol import HandshakeRequest


class TwoFactorPort(Protocol):
    """What the two steps need of the port's authenticator (security/auth.py's Authenticator)."""

    adapter: Any  # the OTP adapter (wsserver.adapters.service.Adapter)
    adapters: Mapping[str, Any]  # every adapter: the first factor may be one
    users: UserTable
    timeout: float


def is_otp_adapter(adapter: Any) -> bool:
    settings = getattr(adapter, "settings", None)
    return getattr(settings, "type", "") == "gemalto"


def code_query_param(adapter: Any) -> str:
    """The query parameter carrying the code, or "" (kept from the endpoints' view)."""
    if not is_otp_adapter(adapter):
        return ""
    o = adapter.settings.gemalto
    return o.code_param if o.code_from == "query" else ""


def strip_query_param(query: str, param: str) -> str:
    return "&".join(part for part in query.split("&") if unquote_plus(part.partition("=")[0]) != param)


def _code_from_request(request: HandshakeRequest, o: Any) -> str | None:
    if o.code_from == "header":
        return request.header(o.code_header.lower())
    values = parse_qs(request.query or "", keep_blank_values=True, max_num_fields=64).get(o.code_param)
    return values[0] if values is not None and len(values) == 1 else None


def verify_two_factor(
    auth: TwoFactorPort, request: HandshakeRequest, name: str, secret: str, run_blocking: RunBlocking
) -> Outcome:
    adapter = auth.adapter
    o = adapter.settings.gemalto
    deadline = time.monotonic() + auth.timeout
    code: str | None  # None: the request carries no code
    if o.code_from == "append":
        if o.first_factor:
            password, code = split_secret(secret, o.otp_length)
        else:
            password, code = "", ""  # the OTP server splits PIN and code itself
    else:
        code = _code_from_request(request, o)
        if code is None:
            return Outcome("invalid", None, "otp_missing", name)
        password = secret
    if code and code_problem(code, o.otp_length):
        return Outcome("invalid", None, "otp_malformed", name)

    user: User | None = None
    if o.first_factor == "users":
        configured = auth.users.get(name)
        if configured is None or not configured.password_hash:
            run_blocking(passwords.verify_dummy, password.encode(), auth.users.dummy_hash)
            return Outcome("invalid", None, "unknown_user")
        if not password or not run_blocking(passwords.verify, configured.password_hash, password.encode()):
            return Outcome("invalid", None, "password", name)
        user = configured
    elif o.first_factor:
        first = auth.adapters.get(o.first_factor)
        if first is None:
            raise RuntimeError(f"first_factor adapter {o.first_factor!r} is not built")
        result = first.authenticate(name, password, timeout=max(deadline - time.monotonic(), 0.001))
        if result.http_status == 503:
            return Outcome("unavailable", None, "backends")
        if not result.accepted:
            return Outcome("invalid", None, "adapter_reject", name)

    # The OTP server sees the password only when it is the one that checks it.
    if o.first_factor:
        otp_secret = code
    elif o.code_from == "append":
        otp_secret = secret
    else:
        otp_secret = password + code
    result = adapter.authenticate(name, otp_secret, timeout=max(deadline - time.monotonic(), 0.001))
    if result.http_status == 503:
        return Outcome("unavailable", None, "backends")
    if not result.accepted:
        return Outcome("invalid", None, "otp_reject", name)
    return Outcome("ok", user or auth.users.get(name) or User(name))
