"""Per-port pools, priority, thread mode, limits and backpressure on a real server."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.rawws import RawClient, frame
from tests.support.server import free_port

pytestmark = pytest.mark.integration


def _config(ports: list[tuple[str, int, str]], endpoints: dict[str, str], server: str = "") -> str:
    # One worker: these tests look inside the process that runs the pools.
    text = f"[server]\nworkers = 1\ngraceful_timeout = 3\n{server}\n"
    endpoints = {**endpoints, "/who": "WhoAmI", "/threads": "Threads"}
    for path, handler in endpoints.items():
        text += f'[[endpoints]]\npath = "{path}"\nhandler = "tests.support.endpoints:{handler}"\n\n'
    for alias, port, pool in ports:
        text += f'[[ports]]\nalias = "{alias}"\nport = {port}\nbind = "127.0.0.1"\n\n[ports.pool]\n{pool}\n\n'
    return text


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _ask(port: int, path: str) -> str:
    with connect(f"ws://127.0.0.1:{port}{path}") as ws:
        ws.send("?")
        return ws.recv(timeout=5)


def _worker_pid(port: int) -> int:
    return int(_ask(port, "/who").split()[0])


def test_thread_mode_keeps_min_threads_warm(start_server):
    greenlet_port, thread_port = free_port(), free_port()
    start_server(
        _config([("g", greenlet_port, 'min = 7\nmode = "greenlet"')], {}),
        wait_for=("127.0.0.1", greenlet_port),
    )
    start_server(
        _config([("t", thread_port, 'min = 7\nmax = 20\nmode = "thread"')], {}),
        wait_for=("127.0.0.1", thread_port),
    )
    time.sleep(0.3)
    assert int(_ask(thread_port, "/threads")) - int(_ask(greenlet_port, "/threads")) == 7


def test_pool_max_bounds_concurrency_and_all_complete(start_server):
    port = free_port()
    start_server(
        _config([("p", port, "min = 1\nmax = 3")], {"/sleepy": "Sleepy"}), wait_for=("127.0.0.1", port)
    )
    replies: list[str] = []

    def client() -> None:
        with connect(f"ws://127.0.0.1:{port}/sleepy") as ws:
            ws.send("go")
            replies.append(ws.recv(timeout=10))

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    elapsed = time.monotonic() - started
    assert len(replies) == 10
    peaks = [int(r.split()[1]) for r in replies]
    assert max(peaks) == 3  # the pool grew to max and never beyond
    assert elapsed >= 0.75  # 10 tasks of 200 ms, 3 at a time: at least 4 rounds


@pytest.mark.parametrize("mode", ["greenlet", "thread"])
def test_exception_does_not_kill_the_executor(start_server, mode):
    port = free_port()
    cfg = _config([("p", port, f'min = 1\nmax = 1\nmode = "{mode}"')], {"/boom": "Boom"})
    start_server(cfg, wait_for=("127.0.0.1", port))
    for _ in range(3):
        with connect(f"ws://127.0.0.1:{port}/boom") as ws:
            ws.send("boom")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == 1011
    with connect(f"ws://127.0.0.1:{port}/boom") as ws:  # the single executor still serves
        ws.send("fine")
        assert ws.recv(timeout=5) == "fine"


def test_priority_high_port_waits_less(start_server):
    high, low = free_port(), free_port()
    cfg = _config(
        [("high", high, "priority = 9\nmin = 4\nmax = 4"), ("low", low, "priority = 1\nmin = 4\nmax = 4")],
        {"/busy": "Busy"},
    )
    start_server(cfg, wait_for=("127.0.0.1", high))
    waits: dict[str, list[float]] = {"high": [], "low": []}
    stop_at = time.monotonic() + 4.0

    def client(name: str, port: int) -> None:
        with connect(f"ws://127.0.0.1:{port}/busy", compression=None) as ws:
            while time.monotonic() < stop_at:
                ws.send(f"{time.time():.6f} 3")
                waits[name].append(float(ws.recv(timeout=30)))

    threads = [
        threading.Thread(target=client, args=(name, port))
        for name, port in (("high", high), ("low", low))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(waits["high"]) > 50 and len(waits["low"]) > 5, {k: len(v) for k, v in waits.items()}
    mean_high, mean_low = statistics.mean(waits["high"]), statistics.mean(waits["low"])
    print(f"mean wait: high {mean_high * 1000:.1f} ms, low {mean_low * 1000:.1f} ms")
    assert mean_low >= 5 * mean_high, (mean_high, mean_low)


def test_thread_mode_blocking_handler_does_not_stall_the_hub(start_server):
    blocking, fast = free_port(), free_port()
    cfg = _config(
        [("blocking", blocking, 'mode = "thread"\nmin = 2\nmax = 4'), ("fast", fast, "min = 2")],
        {"/block": "NativeBlock", "/echo": "Boom"},
    )
    start_server(cfg, wait_for=("127.0.0.1", fast))
    with connect(f"ws://127.0.0.1:{blocking}/block") as slow, connect(f"ws://127.0.0.1:{fast}/echo") as ws:
        slow.send("block")
        time.sleep(0.05)  # the handler is now inside its 500 ms native sleep
        worst = 0.0
        for _ in range(20):
            t0 = time.monotonic()
            ws.send("ping")
            assert ws.recv(timeout=5) == "ping"
            worst = max(worst, time.monotonic() - t0)
        assert slow.recv(timeout=5) == "unblocked"
    assert worst < 0.05, worst


def test_fast_sender_slow_endpoint_loses_nothing_and_memory_stays_bounded(start_server):
    port = free_port()
    start_server(_config([("p", port, "")], {"/slow": "SlowCounter"}), wait_for=("127.0.0.1", port))
    total = 10_000
    pid = _worker_pid(port)
    client = RawClient("127.0.0.1", port, "/slow", timeout=60)
    rss_before = _rss_kib(pid)
    payload = b"".join(frame(0x1, str(i).encode()) for i in range(total))

    sender = threading.Thread(target=client.send, args=(payload,))
    sender.start()
    peak = rss_before
    for expected in range(total):
        opcode, data = client.recv_frame()
        while opcode in (0x9, 0xA):  # a keepalive ping, not an echo
            opcode, data = client.recv_frame()
        assert opcode == 0x1 and data == str(expected).encode()  # none lost, none reordered
        if expected % 1000 == 0:
            peak = max(peak, _rss_kib(pid))
    sender.join(30)
    client.close()
    assert peak - rss_before < 50 * 1024, (rss_before, peak)


@pytest.mark.parametrize("action", ["close", "wait"])
def test_client_that_never_reads(start_server, action):
    port = free_port()
    cfg = _config([("p", port, "")], {"/flood": "Flood", "/echo": "Boom"})
    cfg = cfg.replace(
        'bind = "127.0.0.1"\n',
        f'bind = "127.0.0.1"\nwrite_limit = 1048576\nwrite_limit_action = "{action}"\n'
        "close_timeout_ms = 1000\n",
    )
    server = start_server(cfg, wait_for=("127.0.0.1", port))
    pid = _worker_pid(port)
    rss_before = _rss_kib(pid)
    client = RawClient("127.0.0.1", port, "/flood", timeout=10)
    client.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536)
    client.send(frame(0x1, b"flood 16384"))  # 1 GiB if it were all buffered
    time.sleep(2.0)
    rss_after = _rss_kib(pid)
    assert rss_after - rss_before < 50 * 1024, (rss_before, rss_after)
    # Other sessions on the same port keep working meanwhile.
    with connect(f"ws://127.0.0.1:{port}/echo") as ws:
        ws.send("alive")
        assert ws.recv(timeout=5) == "alive"
    if action == "close":
        assert "write limit reached: closing" in server.logs()
        assert client.at_eof(timeout=10)  # dropped after close_timeout, since it never reads
    else:
        assert "write limit reached" not in server.logs()
        assert not client.at_eof(timeout=0.5)  # still open: the sender is waiting, not buffering
    client.close()


def test_message_larger_than_write_limit_reaches_a_reading_client(start_server):
    port = free_port()
    cfg = _config([("p", port, "")], {"/echo": "Boom"}).replace(
        'bind = "127.0.0.1"\n',
        'bind = "127.0.0.1"\nwrite_limit = 65536\nwrite_limit_action = "close"\n'
        "max_message_size = 16777216\n",
    )
    start_server(cfg, wait_for=("127.0.0.1", port))
    big = "x" * 8_000_000  # more than the kernel buffers hold, and 120 times the write limit
    with connect(f"ws://127.0.0.1:{port}/echo", compression=None, max_size=None) as ws:
        for _ in range(3):
            ws.send(big)
            assert ws.recv(timeout=10) == big  # the limit bounds what waits, not one message
