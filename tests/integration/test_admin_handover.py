"""The admin process replaced after its own change: the listening socket stays with the master,
so an operator's next request is queued and answered by the new process, never refused or reset."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from tests.support.admin import (
    ECHO,
    HOST,
    AdminHTTP,
    admin_pids,
    admin_server,  # noqa: F401 - the fixture
    free_port,
    port_table,
    wait_until,
)
from tests.support.prefork import alive

pytestmark = pytest.mark.integration

CHANGES = 3
SCRIPTS = 2  # threads sending each request on a new connection
POLLS = (0.1, 0.25)  # threads keeping their connection alive, with these pauses between requests


class Hammer:
    """Threads sending GET /api/ports and recording every outcome: some on a new connection per
    request (scripts), some on a kept-alive connection with a pause between requests (consoles
    that poll), which the process being replaced meets idle."""

    def __init__(self, api: AdminHTTP, port: int) -> None:
        self.auth = api.auth
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered: list[float] = []  # when each answered request was sent (monotonic)
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(pause,), daemon=True)
            for pause in [None] * SCRIPTS + list(POLLS)
        ]

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self, pause: float | None) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=20)
        headers = {"Authorization": self.auth, **({"Connection": "close"} if pause is None else {})}
        while not self.stop.is_set():
            sent = time.monotonic()
            outcome = get(conn, headers)
            if pause is None or outcome:
                conn.close()
            self.record(sent, outcome)
            if pause is not None:
                self.stop.wait(pause)

    def record(self, sent: float, outcome: str) -> None:
        with self.lock:
            if outcome:
                self.errors.append(f"{sent:.3f} {outcome}")
            else:
                self.answered.append(sent)

    def answered_since(self, moment: float) -> int:
        with self.lock:
            return sum(1 for sent in self.answered if sent >= moment)


def get(conn: http.client.HTTPConnection, headers: dict[str, str]) -> str:
    """GET /api/ports on ``conn`` (reopened by http.client if the server closed it after an
    answer): "" when answered 200, else what went wrong."""
    try:
        conn.request("GET", "/api/ports", headers=headers)
        response = conn.getresponse()
        response.read()
        return "" if response.status == 200 else f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"


def call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None = None,
) -> tuple[int, dict]:
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_admin_replaced_after_its_change_refuses_nothing(admin_server) -> None:  # noqa: F811
    ws_port = free_port()
    body = (
        '[[packages]]\nname = "Demo"\nenabled = true\n\n'
        + ECHO.format(package='package = "Demo"')
        + port_table("demo_ws", ws_port, "Demo")
    )
    server, api = admin_server(body, ws_port)
    admin_port = int(api.url.rsplit(":", 1)[1])
    (first,) = wait_until(
        lambda: (p := admin_pids(server)) and len(p) == 1 and p, 10, what="one admin process"
    )
    seen = {first}
    # The operator's own connection, kept alive as a browser keeps it: the request right after
    # a change (the console's redirect, the next click) goes out the moment the answer is in.
    operator = http.client.HTTPConnection(HOST, admin_port, timeout=60)
    auth = {"Authorization": api.auth}
    as_json, as_toml = (
        {**auth, "Content-Type": "application/json"},
        {**auth, "Content-Type": "application/toml"},
    )
    changes = [
        lambda i: call(
            operator,
            "PATCH",
            "/api/ports/demo_ws",
            as_json,
            json.dumps({"description": f"change {i}"}).encode(),
        ),
        lambda i: call(
            operator, "PATCH", "/api/ports/demo_ws", as_json, json.dumps({"port": free_port()}).encode()
        ),
        lambda i: call(
            operator,
            "POST",
            "/api/packages/import",
            as_toml,
            (
                f'[[packages]]\nname = "Imported{i}"\nenabled = true\n\n'
                + ECHO.replace("/echo", f"/echo{i}").format(package=f'package = "Imported{i}"')
            ).encode(),
        ),
    ]
    with Hammer(api, admin_port) as hammer:
        wait_until(lambda: hammer.answered_since(0), 10, what="a first answer")
        for i in range(CHANGES):
            (old,) = admin_pids(server)
            status, reply = changes[i % len(changes)](i)
            assert status in (200, 201) and reply["reload"]["result"] == "success", reply
            if i % 2 == 0:  # the next click at once (else a moment later, below)
                hammer.record(time.monotonic(), get(operator, auth))
            new = wait_until(
                lambda old=old: (
                    (p := [pid for pid in admin_pids(server) if pid != old]) and not alive(old) and p
                ),
                15,
                interval=0.005,
                what="the old admin process gone",
            )
            assert len(new) == 1 and new[0] not in seen
            seen.add(new[0])
            gone = time.monotonic()  # whatever is answered from now on, the new process answered
            hammer.record(gone, get(operator, auth))
            wait_until(
                lambda gone=gone: hammer.answered_since(gone) >= 5,
                10,
                what="answers from the new admin process",
            )
        assert hammer.errors == [], f"{len(hammer.errors)} failed requests, first: {hammer.errors[:5]}"
    operator.close()
    assert len(seen) == CHANGES + 1 and alive(server.pid)
