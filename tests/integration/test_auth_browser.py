"""Cross-site WebSocket hijacking, tried by a real browser (headless Chromium).

The victim is logged in: the allowed site (http://127.0.0.1:H_ALLOWED) set a session cookie
holding a JWT. A foreign page (http://127.0.0.1:H_FOREIGN, framed by the allowed page, so the
browser holds the cookie and sends it) opens a WebSocket to the port:

- on the protected port (same_origin + allowed = [the allowed site]) the foreign page is
  refused with 403 (origin) while the allowed page gets a session as the cookie's user;
- on a control port that also trusts the foreign origin, the same frame gets a session as the
  victim: the cookie really is sent cross-origin, and the Origin check is what stops it.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.server import free_port
from wsserver.security.jwt import sign

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECRET = "browser-test-secret-" + "z" * 24
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)

PAGE = """<!doctype html><html><body><pre id="out">pending</pre>{frame}<script>
const img = document.createElement('img'); img.src = '/hold'; document.body.appendChild(img);
function t(url) {{ return new Promise(res => {{
  let ws; try {{ ws = new WebSocket(url); }} catch (e) {{ res(url + ' THROW'); return; }}
  const timer = setTimeout(() => res(url + ' TIMEOUT'), 8000);
  ws.onopen = () => ws.send('who');
  ws.onmessage = e => {{ clearTimeout(timer); res(url + ' OK ' + e.data); ws.close(); }};
  ws.onerror = () => {{ clearTimeout(timer); res(url + ' ERROR'); }};
  ws.onclose = e => {{ clearTimeout(timer); res(url + ' CLOSED ' + e.code); }};
}}); }}
Promise.all({urls}.map(t)).then(r => {{
  document.getElementById('out').textContent = 'DONE\\n' + r.join('\\n');
  fetch('/result', {{method: 'POST', body: r.join('\\n')}});
}});
</script></body></html>"""


class Site:
    """A tiny web site on loopback: /page (HTML, optional Set-Cookie), /hold, /result."""

    def __init__(self, html: str, set_cookie: str = "") -> None:
        self.html = html.encode()
        self.set_cookie = set_cookie
        self.done = threading.Event()
        self.result = ""
        self.port = free_port()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, ctype: str, cookie: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if cookie:
                    self.send_header("Set-Cookie", cookie)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/page":
                    self._send(200, site.html, "text/html; charset=utf-8", site.set_cookie)
                elif self.path == "/hold":
                    site.done.wait(20)
                    self._send(200, PNG_1X1, "image/png")
                else:
                    self._send(404, b"", "text/plain")

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                site.result = self.rfile.read(length).decode()
                site.done.set()
                self._send(204, b"", "text/plain")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _port(alias: str, port: int, allowed: list[str]) -> str:
    allowed_toml = "[" + ", ".join(f'"{a}"' for a in allowed) + "]"
    return (
        f'[[ports]]\nalias = "{alias}"\nport = {port}\nbind = "127.0.0.1"\nclient_auth = "jwt"\n'
        f'[ports.jwt]\nkey = "{SECRET}"\ncookie = "session"\nbearer = false\n'
        f"[ports.origin]\nsame_origin = true\nallowed = {allowed_toml}\nallow_missing = false\n"
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/system-deps.sh installs it)")
def test_foreign_page_cannot_hijack_a_cookie_session(start_server, tmp_path) -> None:
    protected, control = free_port(), free_port()
    token = sign({"sub": "alice", "exp": time.time() + 600}, SECRET.encode())
    urls = [f"ws://127.0.0.1:{protected}/who", f"ws://127.0.0.1:{control}/who"]

    with Site(PAGE.format(frame="", urls=urls)) as foreign:
        frame = f'<iframe src="{foreign.origin}/page" width="10" height="10"></iframe>'
        cookie = f"session={token}; Path=/; SameSite=Lax; HttpOnly; Max-Age=600"
        with Site(PAGE.format(frame=frame, urls=urls), set_cookie=cookie) as allowed:
            config = (
                "[server]\ngraceful_timeout = 5\nworkers = 1\n\n"
                '[[endpoints]]\npath = "/who"\nhandler = "tests.support.auth_endpoints:WhoAmI"\n\n'
                + _port("protected", protected, [allowed.origin])
                + "\n"
                + _port("control", control, [allowed.origin, foreign.origin])
                + '\n[[users]]\nname = "alice"\n'
            )
            server = start_server(config, wait_for=("127.0.0.1", protected), args=("--log-level", "debug"))
            cmd = [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--dump-dom",
                f"{allowed.origin}/page",
            ]
            dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90).stdout
            assert allowed.done.is_set() and foreign.done.is_set(), dom

    mine = dict(line.split(" ", 1) for line in allowed.result.splitlines())
    theirs = dict(line.split(" ", 1) for line in foreign.result.splitlines())
    # The allowed site: a session as the cookie's user on both ports.
    assert mine[urls[0]] == "OK user=alice query=", allowed.result
    assert mine[urls[1]] == "OK user=alice query=", allowed.result
    # The foreign frame: refused on the protected port (the browser sees a failed handshake) ...
    assert theirs[urls[0]] in ("ERROR", "CLOSED 1006"), foreign.result
    # ... while a port that trusted its origin would have let it in with the victim's cookie.
    assert theirs[urls[1]] == "OK user=alice query=", foreign.result

    logs = server.logs()
    refused = [line for line in logs.splitlines() if "port=protected" in line and "status=403" in line]
    assert len(refused) == 1 and "reason=origin" in refused[0], logs
    assert token not in logs and token.split(".")[2] not in logs and SECRET not in logs
