"""The admin application without sockets: a real config file, a fake master."""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from pathlib import Path
from urllib.parse import unquote, urlencode

import pytest

from wsserver.admin.api import AdminApp
from wsserver.admin.auth import AdminAuth
from wsserver.admin.httpd import Request, Response
from wsserver.admin.store import ConfigStore, etag_of
from wsserver.config import parse_config
from wsserver.security.passwords import hash_password

HASH = hash_password("pw", scrypt_n=2**10)
ORIGIN = "http://127.0.0.1:9100"
CONFIG = f"""\
# admin unit test config
[[packages]]
name = "Demo"      # demo
enabled = true

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"
package = "Demo"

[[ports]]
alias = "demo_ws"
port = 18080        # the demo port
bind = "127.0.0.1"
package = "Demo"

[[ports]]
alias = "plain"
port = 18081
bind = "127.0.0.1"

[ports.access]
mode = "deny"
allow_endpoints = ["/echo"]

[[users]]
name = "admin"
password_hash = "{HASH}"
connection_types = ["admin"]

[[users]]
name = "chat"
password_hash = "{HASH}"
connection_types = ["ws"]
"""


class FakeMaster:
    def __init__(self) -> None:
        self.reloads = 0
        self.result = "success"
        self.closed: list[tuple[str, int, str]] = []
        self.revoked: list[str] = []

    def status(self):
        return {
            "master": {"pid": 1, "gen": 1 + self.reloads},
            "workers": [{"pid": 2, "gen": 1, "connections": 3}],
            "ports": {"demo_ws": {"listening": ["127.0.0.1:18080"], "connections": 3}},
        }

    def sessions(self, port=None, limit=1000):
        sessions = [
            {
                "id": "2-1",
                "port": "demo_ws",
                "path": "/echo",
                "user": None,
                "remote_address": "127.0.0.1:5",
                "age_s": 1.5,
                "messages_in": 1,
                "messages_out": 1,
                "pid": 2,
                "gen": 1,
            }
        ]
        return {
            "sessions": [s for s in sessions if not port or s["port"] == port],
            "total": 1,
            "unanswered": [],
        }

    def close_session(self, session_id, code, reason):
        self.closed.append((session_id, code, reason))
        return session_id == "2-1"

    def reload(self):
        self.reloads += 1
        if self.result != "success":
            return {"result": self.result, "errors": ["cannot listen: port in use"], "gen": 1}
        return {"result": "success", "errors": [], "gen": 1 + self.reloads}

    def revoke(self, nonce):
        self.revoked.append(nonce)


@pytest.fixture
def env(tmp_path: Path):
    path = tmp_path / "wsserver.toml"
    path.write_text(CONFIG)
    master = FakeMaster()
    config = parse_config(CONFIG, str(path))
    app = AdminApp(ConfigStore(str(path), master), master, AdminAuth(config.users, b"s" * 32), config)
    return app, master, path


def call(
    app,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict | None = None,
    user: str | None = "admin",
    password: str = "pw",
) -> Response:
    target, _, query = path.partition("?")
    hdrs = {"host": "127.0.0.1:9100", **(headers or {})}
    if user is not None:
        hdrs["authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    return app(Request(method, target, params, hdrs, body, "127.0.0.1", "http"))


def jcall(app, method: str, path: str, data=None, **kw) -> tuple[Response, dict]:
    body = json.dumps(data).encode() if data is not None else b""
    headers = (
        {"content-type": "application/json", **kw.pop("headers", {})}
        if data is not None
        else kw.pop("headers", {})
    )
    response = call(app, method, path, body, headers, **kw)
    return response, json.loads(response.body or b"{}")


def header(response: Response, name: str) -> str:
    return next((v for k, v in response.headers if k.lower() == name.lower()), "")


def test_authentication(env) -> None:
    app, _, _ = env
    response = call(app, "GET", "/api/ports", user=None)
    assert response.status == 401 and header(response, "WWW-Authenticate").startswith("Basic ")
    assert call(app, "GET", "/api/ports", password="wrong").status == 401
    assert call(app, "GET", "/api/ports", user="chat").status == 403
    assert call(app, "GET", "/api/ports").status == 200
    assert call(app, "GET", "/ports", user="admin").status == 303  # the console wants its own login


def test_list_ports(env) -> None:
    app, _, path = env
    response, data = jcall(app, "GET", "/api/ports")
    assert header(response, "ETag") == etag_of(path.read_bytes())
    demo, plain = data["ports"]
    assert demo["endpoints"] == [{"path": "/echo", "url": "ws://127.0.0.1:18080/echo", "package": "Demo"}]
    assert (demo["connections"], demo["listening"], demo["enabled"], demo["active"]) == (
        3,
        ["127.0.0.1:18080"],
        True,
        True,
    )
    assert plain["access_mode"] == "deny" and plain["settings"]["access"]["allow_endpoints"] == ["/echo"]
    assert "default-src 'none'" in header(response, "Content-Security-Policy")


def test_patch_applies_and_keeps_comments(env) -> None:
    app, master, path = env
    response, data = jcall(app, "PATCH", "/api/ports/plain", {"description": "edited", "backlog": 99})
    assert response.status == 200, data
    assert data["port"]["settings"]["backlog"] == 99 and data["changed"] and master.reloads == 1
    assert header(response, "ETag") == etag_of(path.read_bytes())
    text = path.read_text()
    assert "# the demo port" in text and 'description = "edited"' in text


def test_invalid_edit_changes_nothing(env) -> None:
    app, master, path = env
    before = path.read_bytes()
    response, data = jcall(app, "PATCH", "/api/ports/plain", {"backlog": 70000, "pool": {"min": 9, "max": 3}})
    assert response.status == 400
    assert data["errors"] == [
        f"{path}: ports[1].backlog = 70000: must be an integer 1..65535",
        f"{path}: ports[1]: pool.min = 9 is larger than pool.max = 3",
    ]
    assert path.read_bytes() == before and master.reloads == 0


def test_if_match(env) -> None:
    app, _master, path = env
    etag = header(call(app, "GET", "/api/ports"), "ETag")
    first, _ = jcall(app, "POST", "/api/ports/plain/disable", headers={"if-match": etag})
    assert first.status == 200
    before = path.read_bytes()
    second, data = jcall(app, "POST", "/api/ports/plain/enable", headers={"if-match": etag})
    assert second.status == 412 and "changed since you read it" in data["error"]
    assert header(second, "ETag") == etag_of(before) and path.read_bytes() == before
    assert jcall(app, "POST", "/api/ports/plain/enable", headers={"if-match": "*"})[0].status == 200


def test_a_reload_that_fails_restores_the_file(env) -> None:
    app, master, path = env
    before = path.read_bytes()
    master.result = "failed"
    response, data = jcall(app, "POST", "/api/ports", {"alias": "new_ws", "port": 18090, "bind": "127.0.0.1"})
    assert response.status == 409 and data["errors"] == ["cannot listen: port in use"]
    assert "restored" in data["error"] and path.read_bytes() == before


def test_add_get_delete_port(env) -> None:
    app, _master, _ = env
    response, data = jcall(app, "POST", "/api/ports", {"alias": "new_ws", "port": 18090, "bind": "127.0.0.1"})
    assert response.status == 201 and header(response, "Location") == "/api/ports/new_ws"
    assert data["port"]["endpoints"][0]["url"] == "ws://127.0.0.1:18090/echo"
    assert jcall(app, "GET", "/api/ports/new_ws")[1]["port"]["port"] == 18090
    assert jcall(app, "POST", "/api/ports", {"alias": "new_ws", "port": 18091})[0].status == 409
    assert jcall(app, "DELETE", "/api/ports/new_ws")[0].status == 200
    assert jcall(app, "GET", "/api/ports/new_ws")[0].status == 404
    assert jcall(app, "DELETE", "/api/ports/new_ws")[0].status == 404


def test_reset_access(env) -> None:
    app, _, path = env
    response, data = jcall(app, "POST", "/api/ports/plain/reset-access")
    assert response.status == 200 and data["port"]["access_mode"] == "allow"
    assert "[ports.access]" not in path.read_text()


def test_packages_export_import(env) -> None:
    app, master, path = env
    response, data = jcall(app, "POST", "/api/packages/Demo/disable")
    assert response.status == 200 and data["package"]["enabled"] is False
    exported = call(app, "GET", "/api/packages/Demo/export")
    assert exported.content_type.startswith("application/toml")
    assert 'alias = "demo_ws"' in exported.body.decode()
    refused = call(app, "POST", "/api/packages/import", exported.body, {"content-type": "text/plain"})
    assert refused.status == 415  # a type an HTML form could send
    before = path.read_bytes()
    response = call(
        app, "POST", "/api/packages/import?dry_run=1", exported.body, {"content-type": "application/toml"}
    )
    data = json.loads(response.body)
    assert response.status == 200 and data["dry_run"] and data["created"] == 0 and data["kept"] == 3
    assert path.read_bytes() == before and master.reloads == 1


def test_sessions_workers_reload(env) -> None:
    app, master, _ = env
    assert [s["id"] for s in jcall(app, "GET", "/api/sessions?port=demo_ws")[1]["sessions"]] == ["2-1"]
    assert jcall(app, "DELETE", "/api/sessions/2-1?code=4001")[0].status == 200
    assert master.closed[-1][:2] == ("2-1", 4001)
    assert jcall(app, "DELETE", "/api/sessions/2-9")[0].status == 404
    assert jcall(app, "DELETE", "/api/sessions/2-1?code=1005")[0].status == 400
    assert jcall(app, "GET", "/api/workers")[1]["workers"][0]["pid"] == 2
    response, data = jcall(app, "POST", "/api/reload")
    assert response.status == 200 and data["result"] == "success"


def test_changes_from_another_site_are_refused(env) -> None:
    app, _, path = env
    before = path.read_bytes()
    response = call(app, "POST", "/api/ports/plain/disable", headers={"origin": "http://evil.example"})
    assert response.status == 403 and path.read_bytes() == before
    assert call(app, "POST", "/api/ports/plain/disable", headers={"origin": ORIGIN}).status == 200
    assert (
        call(
            app,
            "PATCH",
            "/api/ports/plain",
            b"backlog=5",
            {"content-type": "application/x-www-form-urlencoded"},
        ).status
        == 415
    )


def login(app) -> tuple[str, str]:
    """Log in through the form; returns (cookie header, csrf token from the Ports page)."""
    response = call(
        app,
        "POST",
        "/login",
        urlencode({"user": "admin", "password": "pw"}).encode(),
        {"content-type": "application/x-www-form-urlencoded", "origin": ORIGIN},
        user=None,
    )
    assert response.status == 303 and header(response, "Location") == "/ports"
    set_cookie = header(response, "Set-Cookie")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    cookie = set_cookie.split(";", 1)[0]
    page = call(app, "GET", "/ports", headers={"cookie": cookie}, user=None)
    assert page.status == 200
    token = re.search(r'name="csrf" value="([^"]+)"', page.body.decode()).group(1)
    return cookie, token


def form(app, path: str, fields: dict, cookie: str, origin: str | None = ORIGIN) -> Response:
    headers = {"content-type": "application/x-www-form-urlencoded", "cookie": cookie}
    if origin:
        headers["origin"] = origin
    return call(app, "POST", path, urlencode(fields, doseq=True).encode(), headers, user=None)


def test_console_login_and_csrf(env) -> None:
    app, _, path = env
    bad = call(
        app,
        "POST",
        "/login",
        b"user=admin&password=no",
        {"content-type": "application/x-www-form-urlencoded"},
        user=None,
    )
    assert bad.status == 401 and b"Wrong user name or password" in bad.body
    assert call(app, "GET", "/login?next=//evil.example/x", user=None).status == 200
    cookie, token = login(app)
    before = path.read_bytes()
    assert form(app, "/ports/plain/toggle", {"enabled": "false"}, cookie).status == 403  # no token
    assert form(app, "/ports/plain/toggle", {"enabled": "false", "csrf": "x" * 43}, cookie).status == 403
    assert (
        form(
            app,
            "/ports/plain/toggle",
            {"enabled": "false", "csrf": token},
            cookie,
            origin="http://evil.example",
        ).status
        == 403
    )
    assert (
        form(app, "/ports/plain/toggle", {"enabled": "false", "csrf": token}, cookie, origin=None).status
        == 403
    )
    assert path.read_bytes() == before
    done = form(
        app, "/ports/plain/toggle", {"enabled": "false", "csrf": token, "etag": etag_of(before)}, cookie
    )
    assert done.status == 303 and header(done, "Location") == "/ports?done=disabled&name=plain"
    assert parse_config(path.read_text()).ports[1].enabled is False
    stale = form(
        app, "/ports/plain/toggle", {"enabled": "true", "csrf": token, "etag": etag_of(before)}, cookie
    )
    assert stale.status == 412 and b"changed since you read it" in stale.body
    # the API accepts the cookie too, with the token on changes
    assert (
        call(app, "POST", "/api/reload", headers={"cookie": cookie, "origin": ORIGIN}, user=None).status
        == 403
    )
    assert (
        call(
            app,
            "POST",
            "/api/reload",
            headers={"cookie": cookie, "origin": ORIGIN, "x-csrf-token": token},
            user=None,
        ).status
        == 200
    )
    out = form(app, "/logout", {"csrf": token}, cookie)
    assert out.status == 303 and "Max-Age=0" in header(out, "Set-Cookie")
    assert call(app, "GET", "/ports", headers={"cookie": cookie}, user=None).status == 303


def test_console_port_form_shows_validation_messages(env) -> None:
    app, _master, path = env
    cookie, token = login(app)
    page = call(app, "GET", "/ports/plain", headers={"cookie": cookie}, user=None).body.decode()
    etag = unescape(re.search(r'name="etag" value="([^"]+)"', page).group(1))
    before = path.read_bytes()
    fields = {
        "csrf": token,
        "etag": etag,
        "alias": "plain",
        "port": "18081",
        "backlog": "70000",
        "pool.min": "10",
        "pool.max": "200",
        "enabled": "true",
        "compression": "true",
    }
    response = form(app, "/ports/plain", fields, cookie)
    body = response.body.decode()
    assert response.status == 400 and path.read_bytes() == before
    assert f"{path}: ports[1].backlog = 70000: must be an integer 1..65535" in unescape(body)
    assert '<span class="field-error">must be an integer 1..65535</span>' in body
    fields["backlog"] = "512"
    saved = form(app, "/ports/plain", fields, cookie)
    assert saved.status == 303, saved.body
    cfg = parse_config(path.read_text())
    assert cfg.ports[1].backlog == 512 and cfg.ports[1].access.mode == "deny"  # only what changed
    assert "# the demo port" in path.read_text()


def test_static_files_and_pages(env) -> None:
    app, _, _ = env
    css = call(app, "GET", "/static/console.css", user=None)
    assert css.status == 200 and css.content_type.startswith("text/css")
    assert call(app, "GET", "/static/../api.py", user=None).status == 404
    cookie, _ = login(app)
    for page in ("/ports", "/ports/demo_ws", "/ports/new", "/packages", "/sessions", "/workers"):
        response = call(app, "GET", page, headers={"cookie": cookie}, user=None)
        assert response.status == 200, page
        assert b'<script src="/static/console.js"' in response.body
        assert b"<script>" not in response.body  # no inline script: the CSP forbids it


def test_every_api_route_is_in_the_openapi_file(env) -> None:
    app, _, _ = env
    text = (Path(__file__).resolve().parents[2] / "docs" / "admin-openapi.yaml").read_text()
    documented: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if re.fullmatch(r"  /api/\S+:", line):
            current = line.strip().rstrip(":")
            documented[current] = set()
        elif current and re.fullmatch(r"    (get|post|patch|delete|put):", line):
            documented[current].add(line.strip().rstrip(":").upper())
        elif line and not line.startswith("  "):
            current = None
    routes = set()
    for method, pattern, _ in app.api_routes:
        path = pattern.pattern.rstrip("$").replace("([^/]+)", "{}")
        if "(enable|disable)" in path:
            routes |= {(method, path.replace("(enable|disable)", verb)) for verb in ("enable", "disable")}
        else:
            routes.add((method, path))
    assert len(routes) == 18
    for method, path in routes:
        matches = [k for k in documented if re.fullmatch(re.escape(path).replace(r"\{\}", r"\{\w+\}"), k)]
        assert matches and method in documented[matches[0]], (method, path)


@pytest.mark.parametrize(
    "target",
    [
        "/%5C%5Cevil.example",
        "/%5Cevil.example",
        "/%09/evil.example",
        "//evil.example/x",
        "https://evil.example/",
        "/ports%0D%0ASet-Cookie:%20x=1",
        "/ports%0Aevil",
        "/p%C3%A4ge",
        "/ports/a//b",
        "evil.example",
        "",
    ],
)
def test_login_redirects_only_to_console_paths(env, target) -> None:
    app, _, _ = env
    for value in (target, unquote(target)):  # as sent, and as the query parser decodes it
        response = call(
            app,
            "POST",
            f"/login?next={value}",
            urlencode({"user": "admin", "password": "pw"}).encode(),
            {"content-type": "application/x-www-form-urlencoded", "origin": ORIGIN},
            user=None,
        )
        assert response.status == 303 and header(response, "Location") == "/ports"
        page = call(app, "GET", f"/login?next={value}", user=None)
        assert page.status == 200 and b"evil" not in page.body


def test_deeply_nested_input_is_a_400_with_one_line(env) -> None:
    app, _, path = env
    before = path.read_bytes()
    nested = b"[" * 100_000 + b"]" * 100_000
    response = call(app, "PATCH", "/api/ports/plain", nested, {"content-type": "application/json"})
    assert response.status == 400 and json.loads(response.body) == {"error": "the body is nested too deeply"}
    toml = ("a = " + "[" * 50_000 + "]" * 50_000).encode()
    response = call(app, "POST", "/api/packages/import", toml, {"content-type": "application/toml"})
    assert response.status == 400
    assert json.loads(response.body)["error"] == "import: invalid TOML: nested too deeply"
    assert path.read_bytes() == before


@pytest.mark.parametrize("target", ["/ports", "/ports/plain", "/packages", "/ports/my_port.v2-x"])
def test_login_keeps_a_console_path(env, target) -> None:
    app, _, _ = env
    response = call(
        app,
        "POST",
        f"/login?next={target}",
        urlencode({"user": "admin", "password": "pw"}).encode(),
        {"content-type": "application/x-www-form-urlencoded", "origin": ORIGIN},
        user=None,
    )
    assert response.status == 303 and header(response, "Location") == target


def test_deleting_the_last_port_is_refused_like_check_and_reload(env) -> None:
    app, _, path = env
    assert call(app, "DELETE", "/api/ports/demo_ws").status == 200
    before = path.read_bytes()
    response, data = jcall(app, "DELETE", "/api/ports/plain")
    assert response.status == 400 and any("no [[ports]] declared" in line for line in data["errors"]), data
    assert path.read_bytes() == before


def test_console_port_form_edits_compression_memory_and_own_names(env) -> None:
    app, _master, path = env
    cookie, token = login(app)
    page = call(app, "GET", "/ports/plain", headers={"cookie": cookie}, user=None).body.decode()
    assert 'name="compression_window_bits"' in page and 'name="origin.hosts"' in page
    etag = unescape(re.search(r'name="etag" value="([^"]+)"', page).group(1))
    fields = {
        "csrf": token,
        "etag": etag,
        "alias": "plain",
        "port": "18081",
        "pool.min": "10",
        "pool.max": "200",
        "enabled": "true",
        "compression": "true",
        "compression_window_bits": "12",
        "compression_mem_level": "5",
        "origin.hosts": "app.example.com\nws.example.com:8443",
    }
    saved = form(app, "/ports/plain", fields, cookie)
    assert saved.status == 303, saved.body
    port = parse_config(path.read_text()).ports[1]
    assert (port.compression_window_bits, port.compression_mem_level) == (12, 5)
    assert port.origin.hosts == ("app.example.com", "ws.example.com:8443")
