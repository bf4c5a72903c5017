"""The web console in a real browser (headless Chromium over the DevTools protocol).

Log in, open the Ports screen, toggle a port's Enabled value, and see a real WebSocket client
lose its session (1001) and the port refuse connections; toggle it back and see the port
answer. The port form shows the validator's message for a bad value. Screenshots go to
tests/artifacts/admin/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.support.admin import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    ECHO,
    admin_server,  # noqa: F401 - the fixture
    close_code,
    echo_works,
    free_port,
    port_table,
    refused_soon,
    ws_url,
)
from tests.support.cdp import CHROMIUM, Browser
from tests.support.server import REPO
from wsserver.config import parse_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]

ARTIFACTS = REPO / "tests" / "artifacts" / "admin"


@pytest.fixture
def browser(tmp_path: Path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


def test_console_toggle_a_port_in_a_browser(admin_server, browser: Browser) -> None:  # noqa: F811
    with contextlib.ExitStack() as stack:
        _console_flow(admin_server, browser, stack)


def _console_flow(admin_server, browser: Browser, stack: contextlib.ExitStack) -> None:  # noqa: F811
    demo_port, plain_port = free_port(), free_port()
    body = (
        '[[packages]]\nname = "Demo"\nenabled = true\ndescription = "Demo endpoints"\n\n'
        + ECHO.format(package='package = "Demo"')
        + port_table("demo_ws", demo_port, "Demo")
        + port_table("plain", plain_port, extra='description = "not in a package"\n')
    )
    server, api = admin_server(body, demo_port)
    admin = api.url

    client = stack.enter_context(connect(ws_url(demo_port), open_timeout=5))
    client.send("before")
    assert client.recv(timeout=5) == "before"

    browser.navigate(f"{admin}/ports")
    assert browser.evaluate("location.pathname") == "/login"  # not logged in yet
    browser.screenshot(ARTIFACTS / "01-login.png")
    browser.evaluate(f"document.getElementById('user').value = {json.dumps(ADMIN_USER)}")
    browser.evaluate(f"document.getElementById('password').value = {json.dumps(ADMIN_PASSWORD)}")
    browser.act_and_wait("document.getElementById('login').click()")
    assert browser.evaluate("location.pathname") == "/ports"
    assert browser.text("#toggle-demo_ws") == "Yes"
    assert f"ws://127.0.0.1:{demo_port}/echo" in browser.text("#ports")
    browser.screenshot(ARTIFACTS / "02-ports.png")

    # toggle: the port stops, the client's session gets 1001, new connections are refused
    browser.act_and_wait("document.getElementById('toggle-demo_ws').click()")
    assert browser.text("#notice") == "demo_ws disabled."
    assert browser.text("#toggle-demo_ws") == "No"
    assert close_code(client, timeout=5) == 1001
    assert refused_soon(demo_port)
    assert parse_config(server.config_path.read_text()).ports[0].enabled is False
    browser.screenshot(ARTIFACTS / "03-ports-disabled.png")

    # toggle back: the port answers again
    browser.act_and_wait("document.getElementById('toggle-demo_ws').click()")
    assert browser.text("#toggle-demo_ws") == "Yes"
    assert echo_works(demo_port)
    browser.screenshot(ARTIFACTS / "04-ports-enabled.png")

    # the port form: a bad value shows the validator's message, the file stays as it was
    before = server.config_path.read_bytes()
    browser.navigate(f"{admin}/ports/plain")
    browser.evaluate("document.getElementById('f-backlog').value = '70000'")
    browser.act_and_wait("document.getElementById('save').click()")
    assert "must be an integer 1..65535" in browser.text(".field.invalid")
    assert "ports[1].backlog = 70000: must be an integer 1..65535" in browser.text("#errors")
    assert server.config_path.read_bytes() == before
    browser.screenshot(ARTIFACTS / "05-port-form-invalid.png")
    browser.evaluate("document.getElementById('f-backlog').value = '512'")
    browser.act_and_wait("document.getElementById('save').click()")
    assert (
        browser.evaluate("location.pathname") == "/ports"
        and browser.text("#notice") == "Port plain saved and applied."
    )
    assert parse_config(server.config_path.read_text()).ports[1].backlog == 512

    with connect(ws_url(demo_port), open_timeout=5):
        browser.navigate(f"{admin}/sessions")
        assert "demo_ws" in browser.text("#sessions")
        browser.screenshot(ARTIFACTS / "06-sessions.png")
    browser.navigate(f"{admin}/packages")
    assert "Demo" in browser.text("#packages")
    browser.screenshot(ARTIFACTS / "07-packages.png")
    browser.navigate(f"{admin}/workers")
    assert str(server.pid) in browser.text("main")
    browser.screenshot(ARTIFACTS / "08-workers.png")
