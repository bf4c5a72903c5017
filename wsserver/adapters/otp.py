"""GEMALTO (SafeNet) adapter: one-time passwords (TOTP/HOTP, RFC 6238/4226) checked by an OTP server.

The adapter is called like every password adapter, ``authenticate(user, secret)``, where
``secret`` is the PIN (or password) the OTP server should see followed by the one-time code of
``otp_length`` characters; the PIN part is empty when the port checked the password itself
(``first_factor``, see ``wsserver/security/otp_auth.py``). Two protocols:

- ``privacyidea``: ``POST /validate/check`` with ``user``, ``pass`` (PIN + code) and ``realm``.
  ``result.value`` true accepts; false rejects (wrong or reused code: the server remembers the
  last counter used); a triggered challenge (``transaction_id``) is answered with the code. A
  JSON error answer with HTTP 4xx (unknown user, ...) rejects; 5xx, 429, anything that is not
  privacyIDEA's JSON and every connection problem is a failure of that server.
- ``radius``: ``radius_flow = "challenge"`` sends the PIN in an Access-Request; an
  Access-Challenge is answered on the same server with the code and the challenge's State.
  ``"single"`` sends PIN + code in one Access-Request. Access-Accept accepts, Access-Reject (or a
  second challenge) rejects; no answer is a failure.

Both go through the balancer, so pools, attempts, penalties and metrics are the other adapters'.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from urllib.parse import urlencode, urlsplit

from wsserver.adapters import _http
from wsserver.adapters.balancer import Outcome, Result, Timeouts
from wsserver.adapters.tls import normalize_pins
from wsserver.config.adapter_settings import (
    AdapterSettings,
    GemaltoOptions,
    RadiusOptions,
)

MAX_BODY = 65536


def split_secret(secret: str, length: int) -> tuple[str, str]:
    """(PIN, code): the code is the last ``length`` characters."""
    return secret[:-length], secret[-length:]


def code_problem(code: str, length: int) -> str:
    """Why ``code`` cannot be a one-time code, or ""."""
    if len(code) != length:
        return f"one-time code is not {length} characters"
    if not (code.isascii() and code.isalnum()):
        return "one-time code has characters other than letters and digits"
    return ""


class OtpBackend:
    def __init__(self, settings: AdapterSettings, context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        assert settings.gemalto is not None  # parse_adapter() fills in the table of the adapter's type
        self.options: GemaltoOptions = settings.gemalto
        self.context = context
        self.pins = normalize_pins(settings.pinned_sha256)
        self.radius = None
        if self.options.protocol == "radius":
            from wsserver.adapters.radius import RadiusBackend

            o = self.options
            radius = RadiusOptions(
                secret_env=o.secret_env,
                secret_file=o.secret_file,
                nas_identifier=o.nas_identifier,
                nas_ip_address=o.nas_ip_address,
                require_message_authenticator=o.require_message_authenticator,
            )
            self.radius = RadiusBackend(dataclasses.replace(settings, type="radius", radius=radius))

    def precheck(self, username: str, secret: str) -> str:
        _pin, code = split_secret(secret, self.options.otp_length)
        problem = code_problem(code, self.options.otp_length)
        if problem:
            return problem
        if self.radius is not None:
            return self.radius.precheck(username, secret)
        return ""

    def authenticate(self, server_url: str, username: str, secret: str, timeout: Timeouts) -> Outcome:
        pin, code = split_secret(secret, self.options.otp_length)
        if self.radius is not None:
            return self._radius(server_url, username, pin, code, timeout)
        return self._privacyidea(server_url, username, pin, code, timeout)

    # --- RADIUS ---------------------------------------------------------------------------

    def _radius(self, url: str, username: str, pin: str, code: str, timeout: Timeouts) -> Outcome:
        assert self.radius is not None
        if self.options.radius_flow == "single":
            return _no_challenge(self.radius.authenticate(url, username, pin + code, timeout))
        first = self.radius.authenticate(url, username, pin, timeout)
        state = first.attributes.get("challenge_state") if first.result is Result.REJECTED else None
        if state is None:
            return first  # accepted without a code (the server's policy), rejected, or failed
        if not state:
            return Outcome.rejected("Access-Challenge without a State")
        second = self.radius.authenticate(url, username, code, timeout, state=state)
        return _no_challenge(second)

    # --- privacyIDEA ------------------------------------------------------------------------

    def _privacyidea(self, url: str, username: str, pin: str, code: str, timeout: Timeouts) -> Outcome:
        answer = self._validate(url, {"user": username, "pass": pin + code}, timeout)
        if answer.result is Result.REJECTED and answer.attributes.get("transaction_id"):
            # The server triggered a challenge-response token: answer it with the code.
            answer = self._validate(
                url,
                {"user": username, "pass": code, "transaction_id": answer.attributes["transaction_id"]},
                timeout,
            )
            if answer.attributes.get("transaction_id"):
                return Outcome.rejected("privacyIDEA: a second challenge")
        return answer

    def _validate(self, url: str, fields: dict[str, str], timeout: Timeouts) -> Outcome:
        if self.options.realm:
            fields["realm"] = self.options.realm
        parts = urlsplit(url)
        target = url if parts.path not in ("", "/") else url.rstrip("/") + self.options.path
        body = urlencode(fields).encode()
        headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")]
        try:
            response = _http.request(
                target, "POST", headers, body, timeout, self.context, self.pins, max_body=MAX_BODY
            )
        except _http.HTTPFailure as exc:
            return Outcome.failed(exc.detail, exc.kind)
        return classify_privacyidea(response.status, response.body)


def classify_privacyidea(status: int, body: bytes) -> Outcome:
    """A ``/validate/check`` answer as accepted, rejected (with a ``transaction_id`` when a
    challenge was triggered) or failed."""
    if status >= 500 or status == 429:
        return Outcome.failed(f"HTTP {status}", "server")
    try:
        doc = json.loads(body)
        result = doc["result"]
        ok = result["status"]
    except (ValueError, KeyError, TypeError):
        return Outcome.failed(f"HTTP {status}: not a privacyIDEA answer", "protocol")
    detail = doc.get("detail") if isinstance(doc.get("detail"), dict) else {}
    message = str(detail.get("message", ""))[:200]
    if ok is not True:
        error = result.get("error") if isinstance(result.get("error"), dict) else {}
        text = f"privacyIDEA error {error.get('code', '?')}: {str(error.get('message', ''))[:200]}"
        if 400 <= status < 500:
            return Outcome.rejected(text)  # e.g. ERR904 the user does not exist
        return Outcome.failed(text, "server")
    if status != 200:
        return Outcome.failed(f"HTTP {status}", "server")
    if result.get("value") is True:
        return Outcome.accepted(
            f"privacyIDEA: {message or 'accepted'}", user="", serial=str(detail.get("serial", ""))
        )
    transaction = detail.get("transaction_id")
    if transaction:
        return Outcome.rejected("privacyIDEA: challenge triggered", transaction_id=str(transaction))
    return Outcome.rejected(f"privacyIDEA: {message or 'rejected'}")


def _no_challenge(outcome: Outcome) -> Outcome:
    if outcome.result is Result.REJECTED and "challenge_state" in outcome.attributes:
        return Outcome.rejected("Access-Challenge again after the code")
    return outcome


# --- settings checks (handed to config.adapter_settings by wsserver.preflight; one line each) ------
