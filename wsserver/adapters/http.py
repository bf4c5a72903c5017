"""HTTP adapter: a request to an auth URL carrying the credentials.

``body_format = "basic"`` sends ``Authorization: Basic``; ``"json"`` sends
``{"username": ..., "password": ...}`` (field names configurable). Statuses in
``accept_statuses`` (default 2xx) accept, ``reject_statuses`` (default 401, 403) reject;
everything else (5xx, 429, redirects, ...) and every time-out or connection error is a failure
of that server, so the balancer tries the next one.
"""

from __future__ import annotations

import json
import ssl

from wsserver.adapters import _http
from wsserver.adapters.balancer import Outcome, Timeouts
from wsserver.adapters.tls import normalize_pins
from wsserver.config.adapter_settings import AdapterSettings, status_in
from wsserver.protocol.basic_auth import basic_authorization


class HttpBackend:
    def __init__(self, settings: AdapterSettings, context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        assert settings.http is not None  # parse_adapter() fills in the table of the adapter's type
        self.options = settings.http
        self.context = context
        self.pins = normalize_pins(settings.pinned_sha256)

    def precheck(self, username: str, password: str) -> str:
        if self.options.body_format == "basic" and ":" in username:
            return "user name contains ':' (not allowed with HTTP Basic)"
        return ""

    def _request_parts(self, username: str, password: str) -> tuple[list[tuple[str, str]], bytes]:
        o = self.options
        if o.body_format == "basic":
            return [("Authorization", basic_authorization(username, password))], b""
        body = json.dumps({o.username_field: username, o.password_field: password}).encode()
        return [("Content-Type", "application/json")], body

    def authenticate(self, server_url: str, username: str, password: str, timeout: Timeouts) -> Outcome:
        headers, body = self._request_parts(username, password)
        try:
            response = _http.request(
                server_url,
                self.options.method,
                headers,
                body,
                timeout,
                self.context,
                self.pins,
                max_body=65536,
            )
        except _http.HTTPFailure as exc:
            return Outcome.failed(exc.detail, exc.kind)
        status = response.status
        if status_in(status, self.options.accept_statuses):
            return Outcome.accepted(f"HTTP {status}", user=username)
        if status_in(status, self.options.reject_statuses):
            return Outcome.rejected(f"HTTP {status}")
        return Outcome.failed(f"HTTP {status}", "server")
