"""The admin application: authentication, CSRF defence, the JSON API and the console's routes.

``AdminApp(request) -> response`` is plain code over three collaborators, so the unit tests
drive it without sockets: the :class:`~wsserver.admin.store.ConfigStore` (the file), a master
link (live state, sessions, reload) and :class:`~wsserver.admin.auth.AdminAuth`.

Requests that change something (POST, PATCH, PUT, DELETE) must come from this listener's own
origin: a browser's ``Origin`` (or, without it, ``Referer``) naming another site is refused
with 403, whatever the credentials. A console session (cookie) must also send its CSRF
token (``X-CSRF-Token`` header or ``csrf`` form field). API clients with HTTP Basic must send
JSON as ``application/json`` and imports as ``application/toml``, types an HTML form on
another site cannot send.

Why one long module: one routing table and its handlers, each short; the security checks
(authentication, CSRF, origin) run in one place in front of all of them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any, Protocol
from urllib.parse import quote

from wsserver.admin import console, edits, views
from wsserver.admin.auth import COOKIE, REALM, SESSION_SECONDS, AdminAuth
from wsserver.admin.httpd import Request, Response
from wsserver.admin.store import Committed, ConfigStore, StoreError
from wsserver.config import Config, ConfigError
from wsserver.config.edit import EditError as ResetError
from wsserver.config.edit import reset_access_text
from wsserver.logs import log
from wsserver.preflight import parse
from wsserver.protocol.close_codes import CloseCode

logger = logging.getLogger("wsserver.admin")

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
JSON_TYPES = ("application/json", "application/merge-patch+json")
TOML_TYPES = ("application/toml", "text/toml", "text/x-toml", "application/x-toml")
# The codes an administrator may close a session with (and 3000-4999).
CLOSE_CODES = (
    CloseCode.NORMAL,
    CloseCode.GOING_AWAY,
    CloseCode.POLICY_VIOLATION,
    CloseCode.INTERNAL_ERROR,
    CloseCode.SERVICE_RESTART,
    CloseCode.TRY_AGAIN_LATER,
)
SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


class MasterLink(Protocol):
    def status(self) -> dict[str, Any]: ...
    def sessions(self, port: str | None = None, limit: int = 1000) -> dict[str, Any]: ...
    def close_session(self, session_id: str, code: int, reason: str) -> bool: ...
    def reload(self) -> dict[str, Any]: ...
    def revoke(self, nonce: str) -> None: ...


@dataclass
class Caller:
    user: str
    nonce: str = ""  # a console session's nonce; "" for HTTP Basic

    @property
    def console(self) -> bool:
        return bool(self.nonce)


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        errors: list[str] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.headers = headers or []


def json_response(status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
    return Response(status, body, "application/json", list(headers or []))


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location), *(headers or [])])


def _cookie_value(header: str, name: str) -> str:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:
        return ""
    morsel = jar.get(name)
    return morsel.value if morsel is not None else ""


def _media_type(req: Request) -> str:
    return req.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _form(req: Request) -> dict[str, list[str]]:
    from urllib.parse import parse_qs

    if _media_type(req) != "application/x-www-form-urlencoded":
        raise HTTPError(415, "expected a form (application/x-www-form-urlencoded)")
    try:
        return parse_qs(req.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise HTTPError(400, "the form is not UTF-8") from None


def _json_body(req: Request) -> Any:
    if _media_type(req) not in JSON_TYPES:
        raise HTTPError(415, "send JSON with Content-Type: application/json")
    try:
        return json.loads(req.body or b"null")
    except ValueError as exc:
        raise HTTPError(400, f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise HTTPError(400, "the body is nested too deeply") from None


def close_code(value: Any) -> int:
    try:
        code = int(value)
    except (TypeError, ValueError):
        raise HTTPError(400, "code must be an integer close code") from None
    if code not in CLOSE_CODES and not 3000 <= code <= 4999:
        raise HTTPError(400, f"code must be one of {', '.join(map(str, CLOSE_CODES))} or 3000-4999")
    return code


Route = tuple[str, re.Pattern[str], Callable[..., Response]]


class AdminApp:
    def __init__(self, store: ConfigStore, master: MasterLink, auth: AdminAuth, running: Config) -> None:
        self.store = store
        self.master = master
        self.auth = auth
        self.running = running
        seg = r"([^/]+)"
        api: list[tuple[str, str, Callable[..., Response]]] = [
            ("GET", "/api/ports", self.api_ports),
            ("POST", "/api/ports", self.api_add_port),
            ("GET", f"/api/ports/{seg}", self.api_port),
            ("PATCH", f"/api/ports/{seg}", self.api_patch_port),
            ("DELETE", f"/api/ports/{seg}", self.api_delete_port),
            ("POST", f"/api/ports/{seg}/(enable|disable)", self.api_port_enabled),
            ("POST", f"/api/ports/{seg}/reset-access", self.api_reset_access),
            ("GET", "/api/packages", self.api_packages),
            ("POST", "/api/packages/import", self.api_import),
            ("POST", f"/api/packages/{seg}/(enable|disable)", self.api_package_enabled),
            ("GET", f"/api/packages/{seg}/export", self.api_export),
            ("GET", "/api/sessions", self.api_sessions),
            ("DELETE", f"/api/sessions/{seg}", self.api_close_session),
            ("GET", "/api/workers", self.api_workers),
            ("POST", "/api/reload", self.api_reload),
            ("GET", "/api/config", self.api_config),
        ]
        pages: list[tuple[str, str, Callable[..., Response]]] = [
            ("GET", "/", lambda req, caller: redirect("/ports")),
            ("GET", "/ports", self.page_ports),
            ("GET", "/ports/new", self.page_new_port),
            ("POST", "/ports/new", self.post_new_port),
            ("GET", f"/ports/{seg}", self.page_port),
            ("POST", f"/ports/{seg}", self.post_port),
            ("POST", f"/ports/{seg}/toggle", self.post_port_toggle),
            ("POST", f"/ports/{seg}/reset-access", self.post_reset_access),
            ("POST", f"/ports/{seg}/delete", self.post_delete_port),
            ("GET", "/packages", self.page_packages),
            ("POST", "/packages/import", self.post_import),
            ("POST", f"/packages/{seg}/toggle", self.post_package_toggle),
            ("GET", "/sessions", self.page_sessions),
            ("POST", f"/sessions/{seg}/close", self.post_close_session),
            ("GET", "/workers", self.page_workers),
            ("POST", "/reload", self.post_reload),
            ("POST", "/logout", self.post_logout),
        ]
        self.api_routes: list[Route] = [(m, re.compile(p + "$"), h) for m, p, h in api]
        self.page_routes: list[Route] = [(m, re.compile(p + "$"), h) for m, p, h in pages]

    # ---- dispatch ------------------------------------------------------------------------------
    def __call__(self, req: Request) -> Response:
        is_api = req.path == "/api" or req.path.startswith("/api/")
        try:
            response = self._dispatch(req, is_api)
        except HTTPError as exc:
            response = self._error(req, is_api, exc)
        except StoreError as exc:
            headers = [("ETag", exc.etag)] if exc.etag else []
            response = self._error(req, is_api, HTTPError(exc.status, exc.message, exc.errors, headers))
        response.headers.extend(SECURITY_HEADERS)
        return response

    def _dispatch(self, req: Request, is_api: bool) -> Response:
        if req.path.startswith("/static/") and req.method in ("GET", "HEAD"):
            return console.static(req.path)
        if req.path == "/login":
            return self.login(req)
        routes = self.api_routes if is_api else self.page_routes
        args: tuple[str, ...]
        handler, args, allowed = None, (), set()
        for method, pattern, fn in routes:
            match = pattern.match(req.path)
            if match:
                allowed.add(method)
                if handler is None and (method == req.method or (req.method == "HEAD" and method == "GET")):
                    handler, args = fn, tuple(_unquote(g) for g in match.groups())
        caller = self.authenticate(req, is_api)
        req.user = caller.user
        if handler is None:
            if allowed:
                raise HTTPError(405, "method not allowed", headers=[("Allow", ", ".join(sorted(allowed)))])
            raise HTTPError(404, "not found")
        if req.method in UNSAFE:
            self.check_unsafe(req, caller)
        return handler(req, caller, *args)

    def authenticate(self, req: Request, is_api: bool) -> Caller:
        """The console's pages take a session cookie only (their forms carry its CSRF token);
        the API takes the cookie (with the token on changes) or HTTP Basic."""
        cookie = _cookie_value(req.headers.get("cookie", ""), COOKIE)
        if cookie:
            found = self.auth.session(cookie)
            if found is not None:
                return Caller(found[0], found[1])
        header = req.headers.get("authorization", "")
        if not is_api:
            raise _Redirect("/login" + ("?next=" + quote(req.path) if req.method == "GET" else ""))
        if not header:
            raise HTTPError(401, "authentication required", headers=[("WWW-Authenticate", REALM)])
        verdict = self.auth.check_basic(header, req.peer)
        if verdict.status == 429:
            raise HTTPError(
                429,
                "too many failed logins: try again later",
                headers=[("Retry-After", str(verdict.retry_after))],
            )
        if verdict.status == 401:
            log(logger, "info", "admin: login refused", peer=req.peer, path=req.path)
            raise HTTPError(401, "wrong user name or password", headers=[("WWW-Authenticate", REALM)])
        if verdict.status == 403:
            log(logger, "info", "admin: not an administrator", peer=req.peer, user=verdict.user)
            raise HTTPError(
                403,
                f"user {verdict.user} may not administer this server (connection_types does not allow admin)",
            )
        return Caller(verdict.user)

    def check_unsafe(self, req: Request, caller: Caller) -> None:
        origin = req.headers.get("origin")
        if origin is not None and origin != req.origin:
            raise HTTPError(403, f"cross-origin request refused (Origin {origin})")
        if caller.console:
            referer = req.headers.get("referer", "")
            if origin is None and not (referer == req.origin or referer.startswith(req.origin + "/")):
                raise HTTPError(403, "request refused: no Origin or Referer of this site")
            token = req.headers.get("x-csrf-token", "")
            if not token and _media_type(req) == "application/x-www-form-urlencoded":
                token = _form(req).get("csrf", [""])[-1]
            if not self.auth.check_csrf(caller.nonce, token):
                raise HTTPError(403, "missing or wrong CSRF token: reload the page and try again")

    def _error(self, req: Request, is_api: bool, exc: HTTPError) -> Response:
        if isinstance(exc, _Redirect):
            return redirect(exc.message)
        if is_api:
            data: dict[str, Any] = {"error": exc.message}
            if exc.errors:
                data["errors"] = exc.errors
            return json_response(exc.status, data, exc.headers)
        page = console.error_page(exc.status, exc.message, exc.errors)
        return Response(exc.status, page, "text/html; charset=utf-8", exc.headers)

    # ---- shared ------------------------------------------------------------------------------
    def view_config(self) -> tuple[Config, str, list[str]]:
        """The config in the file (or, if someone broke the file, the running one), its ETag,
        and the file's errors."""
        text, etag = self.store.read()
        try:
            return parse(text, self.store.path or "<built-in>"), etag, []
        except ConfigError as exc:
            return self.running, etag, exc.errors

    def status(self) -> dict[str, Any]:
        try:
            return self.master.status()
        except Exception as exc:  # the master did not answer: show the config without live state
            log(logger, "warning", "admin: no status from the master", error=str(exc))
            return {}

    def change(
        self, req: Request, edit: Callable[[str], Any], if_match: str | None = None, dry_run: bool = False
    ) -> Committed:
        committed = self.store.change(
            edit, if_match if if_match is not None else req.headers.get("if-match"), dry_run=dry_run
        )
        if committed.changed:
            log(
                logger,
                "info",
                "admin: configuration changed",
                user=req.user,
                method=req.method,
                path=req.path,
                peer=req.peer,
            )
        return committed

    def _port_or_404(self, config: Config, alias: str) -> Any:
        port = next((p for p in config.ports if p.alias == alias), None)
        if port is None:
            raise HTTPError(404, f"no port with alias {alias!r}")
        return port

    def _port_answer(self, req: Request, committed: Committed, alias: str, status: int = 200) -> Response:
        config = committed.config or self.view_config()[0]
        port = self._port_or_404(config, alias)
        data = views.port_view(config, port, self.status(), req.host)
        return json_response(
            status,
            {"port": data, "changed": committed.changed, "reload": committed.reload},
            [("ETag", committed.etag)],
        )

    # ---- API: ports ----------------------------------------------------------------------------
    def api_ports(self, req: Request, caller: Caller) -> Response:
        config, etag, errors = self.view_config()
        data: dict[str, Any] = {"ports": views.ports_view(config, self.status(), req.host)}
        if errors:
            data["file_errors"] = errors
        return json_response(200, data, [("ETag", etag)])

    def api_port(self, req: Request, caller: Caller, alias: str) -> Response:
        config, etag, _ = self.view_config()
        port = self._port_or_404(config, alias)
        return json_response(
            200, {"port": views.port_view(config, port, self.status(), req.host)}, [("ETag", etag)]
        )

    def api_add_port(self, req: Request, caller: Caller) -> Response:
        body = _json_body(req)
        committed = self.change(req, lambda text: edits.add_port(text, body))
        alias = body.get("alias", "")
        response = self._port_answer(req, committed, alias, status=201)
        response.headers.append(("Location", f"/api/ports/{quote(alias, safe='')}"))
        return response

    def api_patch_port(self, req: Request, caller: Caller, alias: str) -> Response:
        body = _json_body(req)
        committed = self.change(req, lambda text: edits.patch_port(text, alias, body))
        new_alias = body.get("alias", alias) if isinstance(body, dict) else alias
        return self._port_answer(req, committed, new_alias if isinstance(new_alias, str) else alias)

    def api_delete_port(self, req: Request, caller: Caller, alias: str) -> Response:
        committed = self.change(req, lambda text: edits.delete_port(text, alias))
        return json_response(200, {"deleted": alias, "reload": committed.reload}, [("ETag", committed.etag)])

    def api_port_enabled(self, req: Request, caller: Caller, alias: str, action: str) -> Response:
        committed = self.change(req, lambda text: edits.set_port_enabled(text, alias, action == "enable"))
        return self._port_answer(req, committed, alias)

    def api_reset_access(self, req: Request, caller: Caller, alias: str) -> Response:
        committed = self.change(req, lambda text: _reset_access(text, alias, self.store.path or ""))
        return self._port_answer(req, committed, alias)

    # ---- API: packages -------------------------------------------------------------------------
    def api_packages(self, req: Request, caller: Caller) -> Response:
        config, etag, errors = self.view_config()
        data: dict[str, Any] = {"packages": views.packages_view(config, self.status())}
        if errors:
            data["file_errors"] = errors
        return json_response(200, data, [("ETag", etag)])

    def api_package_enabled(self, req: Request, caller: Caller, name: str, action: str) -> Response:
        committed = self.change(req, lambda text: edits.set_package_enabled(text, name, action == "enable"))
        config = committed.config or self.view_config()[0]
        package = next(p for p in views.packages_view(config, self.status()) if p["name"] == name)
        return json_response(
            200,
            {"package": package, "changed": committed.changed, "reload": committed.reload},
            [("ETag", committed.etag)],
        )

    def api_export(self, req: Request, caller: Caller, name: str) -> Response:
        text, etag = self.store.read()
        try:
            exported = edits.export_package(text, name, self.store.path or "")
        except edits.EditError as exc:
            raise HTTPError(exc.status, str(exc)) from None
        filename = re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".toml"
        return Response(
            200,
            exported.encode(),
            "application/toml; charset=utf-8",
            [("ETag", etag), ("Content-Disposition", f'attachment; filename="{filename}"')],
        )

    def api_import(self, req: Request, caller: Caller) -> Response:
        if _media_type(req) not in TOML_TYPES:
            raise HTTPError(415, "send the package export with Content-Type: application/toml")
        try:
            import_text = req.body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "import: the file is not UTF-8 text") from None
        dry_run = req.query.get("dry_run", "") not in ("", "0", "false")
        committed = self.change(req, lambda text: edits.import_package(text, import_text), dry_run=dry_run)
        report = committed.extra
        data = dict(report.as_dict(), dry_run=dry_run, changed=committed.changed, reload=committed.reload)
        return json_response(200, data, [("ETag", committed.etag)])

    # ---- API: sessions, workers, reload ------------------------------------------------------
    def api_sessions(self, req: Request, caller: Caller) -> Response:
        try:
            limit = max(1, min(int(req.query.get("limit", "1000")), 10000))
        except ValueError:
            raise HTTPError(400, "limit must be an integer") from None
        return json_response(200, self.master.sessions(req.query.get("port") or None, limit))

    def api_close_session(self, req: Request, caller: Caller, session_id: str) -> Response:
        params: dict[str, Any] = dict(req.query)
        if req.body:
            body = _json_body(req)
            if isinstance(body, dict):
                params.update(body)
        code = close_code(params.get("code", CloseCode.NORMAL))
        reason = str(params.get("reason", ""))
        if not self.master.close_session(session_id, code, reason):
            raise HTTPError(404, f"no session {session_id!r}")
        log(logger, "info", "admin: session closed", session=session_id, code=code, user=caller.user)
        return json_response(200, {"closed": session_id, "code": code})

    def api_workers(self, req: Request, caller: Caller) -> Response:
        return json_response(200, views.workers_view(self.status()))

    def api_reload(self, req: Request, caller: Caller) -> Response:
        outcome = self.store.reload()
        from wsserver.admin.store import RELOAD_STATUS

        status = (
            200 if outcome.get("result") == "success" else RELOAD_STATUS.get(outcome.get("result", ""), 409)
        )
        return json_response(status, outcome)

    def api_config(self, req: Request, caller: Caller) -> Response:
        text, etag = self.store.read()
        return Response(200, text.encode(), "application/toml; charset=utf-8", [("ETag", etag)])

    # ---- the console: login ----------------------------------------------------------------
    def login(self, req: Request) -> Response:
        target = _console_target(req.query.get("next", ""))
        if req.method == "GET":
            return console.html(console.login_page(target))
        if req.method != "POST":
            raise HTTPError(405, "method not allowed", headers=[("Allow", "GET, POST")])
        origin = req.headers.get("origin")
        if origin is not None and origin != req.origin:
            raise HTTPError(403, f"cross-origin request refused (Origin {origin})")
        form = _form(req)
        name = form.get("user", [""])[-1]
        verdict = self.auth.check_password(name, form.get("password", [""])[-1], req.peer)
        if verdict.status != 200:
            message = {
                401: "Wrong user name or password.",
                403: f"User {name} may not administer this server.",
                429: "Too many failed logins: try again later.",
            }[verdict.status]
            log(logger, "info", "admin: console login refused", peer=req.peer, status=verdict.status)
            return console.html(console.login_page(target, message), verdict.status)
        secure = "; Secure" if req.scheme == "https" else ""
        cookie = (
            f"{COOKIE}={self.auth.issue(name)}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={SESSION_SECONDS}{secure}"
        )
        log(logger, "info", "admin: console login", user=name, peer=req.peer)
        return redirect(target, [("Set-Cookie", cookie)])

    def post_logout(self, req: Request, caller: Caller) -> Response:
        if caller.nonce:
            self.auth.revoke(caller.nonce)
            try:
                self.master.revoke(caller.nonce)
            except Exception:
                pass
        return redirect(
            "/login", [("Set-Cookie", f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")]
        )

    # ---- the console: pages ------------------------------------------------------------------
    def _page(self, caller: Caller, title: str, body: str, status: int = 200) -> Response:
        token = self.auth.csrf_token(caller.nonce) if caller.nonce else ""
        return console.html(console.layout(title, body, caller.user, token), status)

    def _ctx(self, caller: Caller, etag: str) -> console.FormContext:
        return console.FormContext(csrf=self.auth.csrf_token(caller.nonce) if caller.nonce else "", etag=etag)

    def page_ports(
        self,
        req: Request,
        caller: Caller,
        notice: str = "",
        errors: list[str] | None = None,
        status: int = 200,
    ) -> Response:
        config, etag, file_errors = self.view_config()
        ports = views.ports_view(config, self.status(), req.host)
        notice = notice or console.notice_text(req.query)
        body = console.ports_page(ports, self._ctx(caller, etag), notice, (errors or []) + file_errors)
        return self._page(caller, "Ports", body, status)

    def page_port(self, req: Request, caller: Caller, alias: str) -> Response:
        config, etag, _ = self.view_config()
        port = self._port_or_404(config, alias)
        values = console.form_values(views.settings_of(port))
        body = console.port_form(
            alias, values, config, self._ctx(caller, etag), errors=[], notice=console.notice_text(req.query)
        )
        return self._page(caller, f"Port {alias}", body)

    def page_new_port(self, req: Request, caller: Caller) -> Response:
        config, etag, _ = self.view_config()
        values = console.form_values(views.settings_of(console.new_port_defaults()))
        body = console.port_form(None, values, config, self._ctx(caller, etag), errors=[])
        return self._page(caller, "New port", body)

    def _save_form(self, req: Request, caller: Caller, alias: str | None) -> Response:
        form = _form(req)
        config, etag, _ = self.view_config()
        current = (
            views.settings_of(self._port_or_404(config, alias))
            if alias is not None
            else views.settings_of(console.new_port_defaults())
        )
        patch, values = console.form_patch(form, current)
        index = next((i for i, p in enumerate(config.ports) if p.alias == alias), len(config.ports))
        try:
            if alias is None:
                full = console.new_port_table(patch)
                committed = self.change(
                    req, lambda text: edits.add_port(text, full), form.get("etag", [""])[-1]
                )
                name = full.get("alias", "")
            else:
                committed = self.change(
                    req, lambda text: edits.patch_port(text, alias, patch), form.get("etag", [""])[-1]
                )
                name = patch.get("alias", alias)
        except StoreError as exc:
            ctx = self._ctx(caller, exc.etag or etag)
            messages = [exc.message] if not exc.errors else []
            body = console.port_form(
                alias, values, config, ctx, errors=exc.errors, index=index, messages=messages
            )
            return self._page(caller, f"Port {alias or '(new)'}", body, exc.status)
        done = "saved" if committed.changed else "unchanged"
        return redirect(f"/ports?done={done}&name={quote(str(name))}")

    def post_port(self, req: Request, caller: Caller, alias: str) -> Response:
        return self._save_form(req, caller, alias)

    def post_new_port(self, req: Request, caller: Caller) -> Response:
        return self._save_form(req, caller, None)

    def _console_change(
        self,
        req: Request,
        caller: Caller,
        edit: Callable[[str], Any],
        done: str,
        name: str,
        back: str = "/ports",
    ) -> Response:
        form = _form(req)
        try:
            self.change(req, edit, form.get("etag", [""])[-1])
        except StoreError as exc:
            page = self.page_packages if back == "/packages" else self.page_ports
            return page(req, caller, notice="", errors=[exc.message, *exc.errors], status=exc.status)
        return redirect(f"{back}?done={done}&name={quote(name)}")

    def post_port_toggle(self, req: Request, caller: Caller, alias: str) -> Response:
        enable = _form(req).get("enabled", [""])[-1] == "true"
        return self._console_change(
            req,
            caller,
            lambda text: edits.set_port_enabled(text, alias, enable),
            "enabled" if enable else "disabled",
            alias,
        )

    def post_reset_access(self, req: Request, caller: Caller, alias: str) -> Response:
        return self._console_change(
            req, caller, lambda text: _reset_access(text, alias, self.store.path or ""), "access-reset", alias
        )

    def post_delete_port(self, req: Request, caller: Caller, alias: str) -> Response:
        return self._console_change(
            req, caller, lambda text: edits.delete_port(text, alias), "deleted", alias
        )

    def page_packages(
        self,
        req: Request,
        caller: Caller,
        notice: str = "",
        errors: list[str] | None = None,
        status: int = 200,
        report: Any = None,
    ) -> Response:
        config, etag, file_errors = self.view_config()
        packages = views.packages_view(config, self.status())
        notice = notice or console.notice_text(req.query)
        body = console.packages_page(
            packages, self._ctx(caller, etag), notice, (errors or []) + file_errors, report
        )
        return self._page(caller, "Packages", body, status)

    def post_package_toggle(self, req: Request, caller: Caller, name: str) -> Response:
        enable = _form(req).get("enabled", [""])[-1] == "true"
        return self._console_change(
            req,
            caller,
            lambda text: edits.set_package_enabled(text, name, enable),
            "enabled" if enable else "disabled",
            name,
            back="/packages",
        )

    def post_import(self, req: Request, caller: Caller) -> Response:
        form = _form(req)
        import_text = form.get("toml", [""])[-1]
        dry_run = bool(form.get("dry_run", [""])[-1])
        try:
            committed = self.change(
                req,
                lambda text: edits.import_package(text, import_text),
                form.get("etag", [""])[-1] or None,
                dry_run=dry_run,
            )
        except StoreError as exc:
            return self.page_packages(req, caller, errors=[exc.message, *exc.errors], status=exc.status)
        notice = (
            "Dry run: nothing was changed."
            if dry_run
            else "Imported."
            if committed.changed
            else "Nothing to import: everything exists here."
        )
        return self.page_packages(req, caller, notice=notice, report=committed.extra)

    def page_sessions(self, req: Request, caller: Caller) -> Response:
        data = self.master.sessions(req.query.get("port") or None, 1000)
        body = console.sessions_page(data, self._ctx(caller, ""), console.notice_text(req.query))
        return self._page(caller, "Sessions", body)

    def post_close_session(self, req: Request, caller: Caller, session_id: str) -> Response:
        code = close_code(_form(req).get("code", [str(CloseCode.NORMAL.value)])[-1])
        if not self.master.close_session(session_id, code, "closed by an administrator"):
            raise HTTPError(404, f"no session {session_id!r} (it may have ended)")
        log(logger, "info", "admin: session closed", session=session_id, code=code, user=caller.user)
        return redirect(f"/sessions?done=closed&name={quote(session_id)}")

    def page_workers(
        self,
        req: Request,
        caller: Caller,
        notice: str = "",
        errors: list[str] | None = None,
        status: int = 200,
    ) -> Response:
        body = console.workers_page(
            views.workers_view(self.status()),
            self._ctx(caller, ""),
            notice or console.notice_text(req.query),
            errors or [],
        )
        return self._page(caller, "Workers", body, status)

    def post_reload(self, req: Request, caller: Caller) -> Response:
        outcome = self.store.reload()
        if outcome.get("result") == "success":
            return redirect("/workers?done=reloaded&name=" + str(outcome.get("gen", "")))
        return self.page_workers(
            req, caller, errors=[f"reload {outcome.get('result')}", *outcome.get("errors", [])], status=409
        )


# A console page's path: ASCII letters, digits and ``._~/-`` only. What a browser could read as
# another host ("//h", "/\\h", "/\t/h", a scheme) or what breaks the Location header (CR, LF,
# non-ASCII) cannot match, so ``next`` can only lead to a page of this console.
_CONSOLE_PATH = re.compile(r"/(?:[A-Za-z0-9._~-][A-Za-z0-9._~/-]*)?")


def _console_target(target: str) -> str:
    """Where the login goes next: ``target`` if it is a plain console path, else the ports page."""
    return target if _CONSOLE_PATH.fullmatch(target) and "//" not in target else "/ports"


class _Redirect(HTTPError):
    def __init__(self, location: str) -> None:
        super().__init__(303, location)


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


def _reset_access(text: str, alias: str, source: str) -> str:
    """``wsserver port reset-access``'s edit (its validation is repeated by the store)."""
    try:
        return reset_access_text(text, alias, source)[0]
    except ResetError as exc:
        message = str(exc)
        raise edits.EditError(message, status=404 if "no port with alias" in message else 400) from None
