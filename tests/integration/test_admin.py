"""The admin API on real servers: every operation, packages with real clients, replication,
concurrent edits, and a master killed in the middle of a write."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.support.admin import (
    ECHO,
    HOST,
    admin_pids,
    admin_server,  # noqa: F401 - the fixture
    close_code,
    echo_works,
    free_port,
    port_table,
    refused,
    refused_soon,
    run_cli,
    wait_until,
    ws_url,
)
from tests.support.prefork import alive, children_of
from tests.support.server import REPO
from wsserver.admin import edits
from wsserver.admin.store import WRITE_DELAY_ENV, etag_of
from wsserver.config import parse_config

pytestmark = pytest.mark.integration


def demo_body(demo_port: int, plain_port: int) -> str:
    return (
        '[[packages]]\nname = "Demo"        # the demo package\nenabled = true\n\n'
        + ECHO.format(package='package = "Demo"')
        + '[[endpoints]]\npath = "/plain"\nhandler = "wsserver.endpoints.echo:Echo"\n\n'
        + "# the demo port\n"
        + port_table("demo_ws", demo_port, "Demo")
        + port_table("plain", plain_port)
    )


@pytest.fixture
def demo(admin_server):  # noqa: F811
    demo_port, plain_port = free_port(), free_port()
    server, api = admin_server(demo_body(demo_port, plain_port), demo_port)
    return server, api, demo_port, plain_port


def test_ports_api(demo) -> None:
    server, api, demo_port, plain_port = demo
    path = server.config_path
    listed = api("GET", "/api/ports")
    assert listed.status == 200 and listed.headers["etag"] == etag_of(path.read_bytes())
    ports = {p["alias"]: p for p in listed.json["ports"]}
    assert ports["demo_ws"]["endpoints"] == [
        {"path": "/echo", "url": f"ws://{HOST}:{demo_port}/echo", "package": "Demo"},
        {"path": "/plain", "url": f"ws://{HOST}:{demo_port}/plain", "package": ""},
    ]
    assert ports["plain"]["listening"] == [f"{HOST}:{plain_port}"] and ports["plain"]["enabled"]

    # add a port: it listens when the answer comes
    new_port = free_port()
    added = api(
        "POST", "/api/ports", {"alias": "added", "port": new_port, "bind": HOST, "description": "new"}
    )
    assert added.status == 201, added.body
    assert added.json["reload"]["result"] == "success" and echo_works(new_port, "/plain")
    assert api("GET", "/api/ports/added").json["port"]["listening"] == [f"{HOST}:{new_port}"]

    # edit: endpoint access, deny by default with /echo allowed
    patched = api("PATCH", "/api/ports/added", {"access": {"mode": "deny", "allow_endpoints": ["/echo"]}})
    assert patched.status == 200 and patched.json["port"]["access_mode"] == "deny"
    assert [e["path"] for e in patched.json["port"]["endpoints"]] == ["/echo"]
    assert refused_soon(new_port, "/plain", "403") and echo_works(new_port, "/echo")

    # reset access: every endpoint again
    reset = api("POST", "/api/ports/added/reset-access")
    assert reset.status == 200 and reset.json["port"]["access_mode"] == "allow"
    assert echo_works(new_port, "/plain")

    # disable / enable one port
    assert api("POST", "/api/ports/added/disable").json["port"]["enabled"] is False
    assert refused_soon(new_port)
    assert api("POST", "/api/ports/added/enable").json["port"]["listening"] == [f"{HOST}:{new_port}"]
    assert echo_works(new_port)

    # delete
    assert api("DELETE", "/api/ports/added").status == 200
    assert refused_soon(new_port) and api("GET", "/api/ports/added").status == 404

    text = path.read_text()
    assert "# the demo package" in text and "# the demo port" in text and "# the admin listener" in text
    assert [p.alias for p in parse_config(text).ports] == ["demo_ws", "plain"]
    assert alive(server.pid)


def test_invalid_edit_is_refused_with_the_check_text(demo, tmp_path: Path) -> None:
    server, api, _, _ = demo
    path = server.config_path
    before = path.read_bytes()
    change = {"backlog": 70000, "pool": {"min": 300, "max": 20}, "client_auth": "kerberos"}
    reply = api("PATCH", "/api/ports/plain", change)
    assert reply.status == 400
    assert path.read_bytes() == before  # byte for byte
    # the same change checked by `wsserver check` gives the same lines
    copy = tmp_path / "copy.toml"
    copy.write_text(edits.patch_port(before.decode(), "plain", change))
    check = subprocess.run(
        [sys.executable, "-m", "wsserver", "check", "-c", str(copy)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert check.returncode == 2
    assert reply.json["errors"] == check.stderr.replace(str(copy), str(path)).splitlines()
    assert len(reply.json["errors"]) == 3
    # an endpoint handler that cannot be imported is refused too (the check imports them)
    bad = api(
        "POST",
        "/api/packages/import",
        body=b'[[endpoints]]\npath = "/bad"\nhandler = "no.such.module:X"\n'
        b'[[ports]]\nalias = "x"\nport = 1\n',
        headers={"Content-Type": "application/toml"},
    )
    assert bad.status == 400 and "cannot import module" in " ".join(bad.json["errors"])
    assert path.read_bytes() == before


def test_concurrent_edits_conflict(demo) -> None:
    server, api, _, _ = demo
    path = server.config_path
    etag = api("GET", "/api/ports").headers["etag"]
    first = api("PATCH", "/api/ports/plain", {"description": "first"}, headers={"If-Match": etag})
    assert first.status == 200
    after_first = path.read_bytes()
    second = api("PATCH", "/api/ports/plain", {"description": "second"}, headers={"If-Match": etag})
    assert second.status == 412 and second.headers["etag"] == etag_of(after_first)
    assert path.read_bytes() == after_first
    # someone edits the file by hand: the admin's ETag no longer matches either
    etag = api("GET", "/api/ports/plain").headers["etag"]
    path.write_text(path.read_text().replace('"first"', '"by hand"'))
    assert api("POST", "/api/ports/plain/disable", headers={"If-Match": etag}).status == 412
    # two admins at once, each with the ETag it read: exactly one wins
    etag = api("GET", "/api/ports").headers["etag"]
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda d=d: results.append(
                api("PATCH", "/api/ports/plain", {"description": d}, headers={"If-Match": etag}).status
            )
        )
        for d in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [200, 412]


def test_package_disable_and_enable_with_real_clients(demo) -> None:
    server, api, demo_port, plain_port = demo
    master = server.pid
    with (
        connect(ws_url(demo_port), open_timeout=5) as on_demo,
        connect(ws_url(plain_port, "/plain")) as on_plain,
    ):
        on_demo.send("hello")
        assert on_demo.recv(timeout=5) == "hello"
        started = time.monotonic()
        reply = api("POST", "/api/packages/Demo/disable")
        assert reply.status == 200 and reply.json["package"]["enabled"] is False
        assert close_code(on_demo, timeout=5) == 1001
        assert time.monotonic() - started < 5  # not after graceful_timeout (30 s)
        assert refused_soon(demo_port)
        assert refused_soon(plain_port, expect="404")  # the package's endpoint is gone on the other ports too
        on_plain.send("still here")  # the other port's session is untouched
        assert on_plain.recv(timeout=5) == "still here"
    ports = {p["alias"]: p for p in api("GET", "/api/ports").json["ports"]}
    assert ports["demo_ws"]["active"] is False and ports["demo_ws"]["listening"] == []
    assert api("GET", "/api/packages").json["packages"][0]["enabled"] is False

    assert api("POST", "/api/packages/Demo/enable").status == 200
    assert echo_works(demo_port)
    assert echo_works(plain_port)  # /echo answers on the other port again
    assert server.pid == master and alive(master)
    assert "master starting" in server.logs() and server.logs().count("master starting") == 1


def test_sessions_workers_reload(demo) -> None:
    server, api, demo_port, _ = demo
    with connect(ws_url(demo_port), open_timeout=5) as a, connect(ws_url(demo_port), open_timeout=5) as b:
        for ws in (a, b):
            ws.send("x")
            ws.recv(timeout=5)
        sessions = wait_until(
            lambda: (s := api("GET", "/api/sessions?port=demo_ws").json["sessions"]) and len(s) == 2 and s,
            5,
            what="2 sessions",
        )
        for s in sessions:
            assert s["port"] == "demo_ws" and s["path"] == "/echo" and s["messages_in"] == 1
            assert s["remote_address"].startswith(f"{HOST}:") and s["pid"] in server.workers()
        local = a.socket.getsockname()[1]
        target = next(s for s in sessions if s["remote_address"] == f"{HOST}:{local}")
        assert api("DELETE", f"/api/sessions/{target['id']}?code=4001&reason=bye").status == 200
        assert close_code(a, timeout=5) == 4001
        b.send("y")
        assert b.recv(timeout=5) == "y"
        assert api("DELETE", f"/api/sessions/{target['id']}").status == 404
        assert api("DELETE", "/api/sessions/1-1?code=1005").status == 400

        workers = api("GET", "/api/workers").json
        pids = sorted(w["pid"] for w in workers["workers"])
        assert pids == sorted(set(server.workers()) - set(admin_pids(server)))
        assert sum(w["connections"] for w in workers["workers"]) == 1
        gen = workers["master"]["gen"]
        reload = api("POST", "/api/reload")
        assert reload.status == 200 and reload.json == {"result": "success", "errors": [], "gen": gen + 1}
        b.send("after reload")  # hitless: the session goes on
        assert b.recv(timeout=5) == "after reload"


def test_replicate_a_package_to_another_server(admin_server, tmp_path: Path) -> None:  # noqa: F811
    p1, p2 = free_port(), free_port()
    source_body = (
        '[[packages]]\nname = "Demo"\nenabled = true\ndescription = "replicated"\n\n'
        + ECHO.format(package='package = "Demo"')
        + port_table("demo_a", p1, "Demo", "backlog = 111\n[ports.pool]\nmax = 42\n")
        + port_table("demo_b", p2, "Demo", 'description = "the second"\n')
    )
    a_server, a = admin_server(source_body, p1)
    # B already has port p1 (other alias, other settings; disabled, so A and B can run side by side)
    own = free_port()
    target_body = (
        ECHO.format(package="")
        + port_table("b_own", p1, extra='enabled = false\ndescription = "mine"\n')
        + port_table("b_main", own)
    )
    b_server, b = admin_server(target_body, own)
    exported = tmp_path / "demo.toml"
    out = run_cli("package", "export", "Demo", "-o", str(exported), "--admin", a.url, "--user", "root")
    assert out.returncode == 0, out.stderr
    assert tomllib.loads(exported.read_text())["ports"][1]["description"] == "the second"
    a_server.stop()  # its ports are free now for B

    b_before = parse_config(b_server.config_path.read_text()).ports[0]
    dry = run_cli("package", "import", str(exported), "--dry-run", "--admin", b.url)
    assert dry.returncode == 0 and "dry run: 2 created" in dry.stderr
    done = run_cli("package", "import", str(exported), "--admin", b.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "created: package Demo",
        "kept: endpoint /echo (the path exists (handler wsserver.endpoints.echo:Echo))",
        f"kept: port demo_a (port {p1} exists here as b_own)",
        "created: port demo_b",
    ]
    cfg = parse_config(b_server.config_path.read_text())
    assert [p.alias for p in cfg.ports] == ["b_own", "b_main", "demo_b"]
    assert cfg.ports[0] == b_before  # the existing port kept its settings
    assert cfg.ports[2].description == "the second" and cfg.ports[2].package == "Demo"
    assert echo_works(p2)  # the created port serves on B
    assert refused(p1) == "refused"  # b_own stays disabled
    again = run_cli("package", "import", str(exported), "--admin", b.url)
    assert again.returncode == 0 and "0 created" in again.stderr
    listed = run_cli("package", "list", "--admin", b.url)
    assert listed.stdout.startswith("Demo\tenabled")
    off = run_cli("package", "disable", "Demo", "--admin", b.url)
    assert off.returncode == 0 and "package Demo disabled" in off.stdout and refused_soon(p2)
    wrong = run_cli("package", "enable", "Demo", "--admin", b.url, password="nope")
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr


def test_authentication_on_the_listener(demo) -> None:
    server, api, _, _ = demo
    from tests.support.admin import AdminHTTP

    port = int(api.url.rsplit(":", 1)[1])
    assert AdminHTTP(port, password="wrong")("GET", "/api/ports").status == 401
    assert AdminHTTP(port, user="nobody")("GET", "/api/ports").headers["www-authenticate"].startswith("Basic")
    cross = api("POST", "/api/ports/plain/disable", headers={"Origin": "http://evil.example"})
    assert cross.status == 403 and "plain" in {
        p.alias for p in parse_config(server.config_path.read_text()).active_ports()
    }


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for child in children_of(pid):
        pids += _tree(child)
    return pids


def _kill_tree(pid: int) -> None:
    for p in _tree(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_master_killed_during_a_write_leaves_old_or_new_file(admin_server) -> None:  # noqa: F811
    demo_port, plain_port = free_port(), free_port()
    # Each fsync of a config write sleeps 2 s first: the kill lands while the temp file is
    # written and not yet renamed.
    server, api = admin_server(demo_body(demo_port, plain_port), demo_port, env={WRITE_DELAY_ENV: "2"})
    path = server.config_path
    old = path.read_bytes()

    def write() -> None:
        try:
            api("PATCH", "/api/ports/plain", {"description": "new"}, timeout=30)
        except OSError:
            pass  # the server is killed under it

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    temp = wait_until(lambda: glob.glob(str(path.parent / f".{path.name}.*.tmp")), 10, what="the temp file")
    assert temp
    _kill_tree(server.pid)
    server.proc.wait(5)
    assert path.read_bytes() == old  # the rename never happened: the old file, whole
    parse_config(path.read_text())
    thread.join(10)


def test_master_killed_during_a_loop_of_writes(admin_server) -> None:  # noqa: F811
    demo_port, plain_port = free_port(), free_port()
    server, api = admin_server(demo_body(demo_port, plain_port), demo_port, workers=1)
    path = server.config_path
    versions = {path.read_bytes()}
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 200:
            i += 1
            try:
                reply = api("PATCH", "/api/ports/plain", {"description": f"version {i}"}, timeout=30)
            except OSError:
                return  # the server is killed under it
            if reply.status != 200:
                return
            versions.add(path.read_bytes())

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    wait_until(lambda: len(versions) >= 3, 60, what="a few writes")
    time.sleep(0.137)
    _kill_tree(server.pid)
    server.proc.wait(5)
    stop.set()
    thread.join(30)
    final = path.read_bytes()
    cfg = parse_config(final.decode())  # whole and valid
    assert cfg.ports[1].description.startswith("version") or final in versions
    assert not [p for p in _tree(server.pid) if alive(p)]


def test_admin_over_tls(admin_server, tmp_path: Path) -> None:  # noqa: F811
    import ssl
    import urllib.error
    import urllib.request

    import trustme

    from tests.support.admin import ADMIN_PASSWORD, ADMIN_USER
    from tests.support.tlsstores import issue, write_pem_files

    ca = trustme.CA()
    cert, key = write_pem_files(tmp_path / "tls", issue(ca, "admin", "127.0.0.1"))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ws_port = free_port()
    body = (
        f'[admin.tls]\nkeystore = "pem"\nkey_alias = "admin"\n\n'
        f'[[keystores]]\nalias = "pem"\ntype = "pem"\n[keystores.keys.admin]\ncert = "{cert}"\nkey = "{key}"\n\n'
        + ECHO.format(package="")
        + port_table("plain", ws_port)
    )
    server, api = admin_server(body, ws_port)
    url = api.url.replace("http://", "https://")
    server.wait_log(r'msg="admin listening" address=https://', timeout=5)
    listed = run_cli("package", "list", "--admin", url, "--cacert", str(ca_file))
    assert listed.returncode == 0, listed.stderr
    untrusted = run_cli("package", "list", "--admin", url)
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    context = ssl.create_default_context(cafile=str(ca_file))
    login = urllib.request.Request(
        url + "/login",
        method="POST",
        data=f"user={ADMIN_USER}&password={ADMIN_PASSWORD}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect)
    try:
        opener.open(login, timeout=30)
        raise AssertionError("expected a 303")
    except urllib.error.HTTPError as exc:
        assert exc.code == 303
        assert "; Secure" in exc.headers["Set-Cookie"]
