"""The pre-forking master on real processes: workers, supervision, signals, reload, broadcast."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.prefork import (
    Client,
    Closed,
    PreforkServer,
    alive,
    children_of,
    connect_refused,
    listening_sockets,
    log_time,
    wait_until,
)
from tests.support.server import REPO, free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
PID_ECHO = "tests.support.prefork_endpoints:PidEcho"


def config(
    port: int,
    workers: int = 2,
    graceful: float = 3,
    server: str = "",
    handler: str = PID_ECHO,
    path: str = "/echo",
    ports: str = "",
    port_extra: str = "",
) -> str:
    return (
        f"[server]\nworkers = {workers}\ngraceful_timeout = {graceful}\n{server}\n"
        f'[[endpoints]]\npath = "{path}"\nhandler = "{handler}"\n\n'
        f'[[ports]]\nalias = "main"\nport = {port}\nbind = "{HOST}"\n{port_extra}\n{ports}'
    )


@pytest.fixture
def prefork(tmp_path: Path) -> Iterator[Callable[..., PreforkServer]]:
    """Start masters for a test; each is stopped (by PID) afterwards, with any worker it left."""
    started: list[PreforkServer] = []

    def start(
        config_text: str | None,
        port: int | None = None,
        args: tuple[str, ...] = (),
        wait: bool = True,
        module: str = "wsserver",
    ) -> PreforkServer:
        workdir = tmp_path / f"server{len(started) + 1}"
        workdir.mkdir()
        server = PreforkServer(workdir, config_text, args=args, module=module)
        started.append(server)
        return server.start(wait_for=(HOST, port) if wait and port else None, timeout=20)

    yield start
    for server in started:
        server.stop()


def pid_client(port: int, path: str = "/echo", timeout: float = 10.0) -> tuple[Client, int]:
    client = Client(HOST, port, path, timeout=timeout)
    assert client.status == 101, client.response_head
    greeting = client.recv_text()
    assert greeting.startswith("pid "), greeting
    return client, int(greeting.split()[1])


def echo_ok(client: Client, text: str) -> None:
    client.send_text(text)
    assert client.recv_text() == text


# ---- processes and balancing ---------------------------------------------------------------


def test_four_workers_and_connections_spread_over_them(prefork):
    port = free_port()
    server = prefork(config(port, workers=4, handler="tests.support.endpoints:WhoAmI"), port)
    workers = server.wait_workers(4)
    out = subprocess.run(
        ["ps", "-o", "pid=,ppid=,args=", "--ppid", str(server.pid), "-p", str(server.pid)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    assert sorted(int(r[0]) for r in rows if int(r[1]) == server.pid) == workers
    assert len(rows) == 5, out
    # The master never has a gevent hub: gevent's extension modules are not even loaded in it.
    assert "gevent" not in Path(f"/proc/{server.pid}/maps").read_text()
    assert "gevent" in Path(f"/proc/{workers[0]}/maps").read_text()
    try:
        import setproctitle  # noqa: F401
    except ImportError:
        pass
    else:
        titles = [r[2] for r in rows]
        assert sum(t.startswith("wsserver: worker [gen 1]") for t in titles) == 4, out
        assert sum(t.startswith("wsserver: master") for t in titles) == 1, out

    clients = [Client(HOST, port, "/echo") for _ in range(400)]
    try:
        for c in clients:
            c.send_text("who")
        counts = collections.Counter(int(c.recv_text().split()[0]) for c in clients)
    finally:
        for c in clients:
            c.close()
    assert set(counts) <= set(workers)
    assert max(counts.values()) <= 0.6 * 400, counts


def test_reuse_port_mode_one_socket_per_worker(prefork):
    port = free_port()
    server = prefork(config(port, workers=2), port, args=("--reuse-port",))
    workers = server.wait_workers(2)
    assert listening_sockets(port) == 2
    seen = set()
    for _ in range(40):
        client, pid = pid_client(port)
        echo_ok(client, "x")
        client.close()
        seen.add(pid)
    assert seen <= set(workers)
    # A replaced worker accepts on the socket of its slot: nothing is refused meanwhile.
    os.kill(workers[0], signal.SIGKILL)
    for _ in range(20):
        client, _ = pid_client(port)
        echo_ok(client, "y")
        client.close()
    wait_until(lambda: len(set(server.workers()) - set(workers)) == 1, 3, what="a new worker")
    assert listening_sockets(port) == 2


# ---- supervision ---------------------------------------------------------------------------


def test_kill_9_a_worker_with_200_clients(prefork):
    port = free_port()
    server = prefork(config(port, workers=3), port)
    workers = server.wait_workers(3)
    clients = [pid_client(port) for _ in range(200)]
    by_pid = collections.Counter(pid for _, pid in clients)
    victim = by_pid.most_common(1)[0][0]
    survivors = [c for c, pid in clients if pid != victim]
    assert survivors

    new_conn_errors: list[tuple[float, float, str]] = []  # (attempt started, failed, error)
    new_conns = 0
    stop = threading.Event()
    killed_at = float("inf")

    def connect_continuously() -> None:
        nonlocal new_conns
        while not stop.is_set():
            started = time.monotonic()
            try:
                c, _ = pid_client(port, timeout=5)
                echo_ok(c, "new")
                c.close_normally()
                new_conns += 1
            except Exception as exc:
                new_conn_errors.append((started, time.monotonic(), repr(exc)))
            time.sleep(0.01)

    thread = threading.Thread(target=connect_continuously)
    thread.start()
    try:
        time.sleep(0.2)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        replacement = wait_until(
            lambda: set(server.workers()) - set(workers), 1.0, interval=0.01, what="a replacement worker"
        )
        replaced_in = time.monotonic() - killed_at
        for round_ in range(3):
            for i, c in enumerate(survivors):
                echo_ok(c, f"{round_}-{i}")
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(10)
        for c, _ in clients:
            c.close()
    # Only a connection the victim had already accepted when it was killed may fail (it dies
    # with the process); every attempt that started after the kill must succeed.
    assert [e for e in new_conn_errors if not e[0] <= killed_at <= e[1]] == []
    assert len(new_conn_errors) <= 1
    assert new_conns > 10
    assert replaced_in < 1.0 and len(replacement) == 1
    assert f"pid={victim}" in server.wait_log(r'msg="worker died".*').group(0)
    assert 'how="signal SIGKILL"' in server.logs()


def test_stuck_worker_is_killed_and_replaced(prefork):
    port = free_port()
    server = prefork(config(port, workers=1, server="worker_timeout = 1"), port)
    [worker] = server.wait_workers(1)
    client, pid = pid_client(port)
    assert pid == worker
    client.send_text("hog")  # a busy loop on the worker's hub: no heartbeat any more
    timed_out = server.wait_log(
        f'msg="worker timed out; killing" pid={worker}.*stack_dump=SIGUSR2', timeout=5
    )
    died = server.wait_log(f'msg="worker died" pid={worker}.*', timeout=5)
    assert 'how="signal SIGKILL"' in died.group(0)
    [new] = wait_until(lambda: [p for p in server.workers() if p != worker], 3, what="a new worker")
    # Between the two: the stuck worker's stack, down to the endpoint's busy loop.
    dump = server.logs()[timed_out.end() : died.start()]
    assert "Current thread" in dump and "(most recent call first)" in dump
    assert re.search(r'File ".*prefork_endpoints\.py", line \d+ in on_text', dump), dump
    client.close()
    c2, pid2 = pid_client(port)
    assert pid2 == new
    echo_ok(c2, "alive")
    c2.close()


def test_endpoint_import_error_fails_fast_without_forking(prefork):
    port = free_port()
    server = prefork(config(port, handler="no_such_module_xyz:Nope"), wait=False)
    assert server.wait(10) == 2
    logs = server.logs()
    assert "cannot import module 'no_such_module_xyz'" in logs
    assert "worker started" not in logs


def test_crash_loop_backs_off_and_the_master_gives_up(prefork):
    port = free_port()
    server = prefork(
        config(port, workers=2, handler="tests.support.prefork_endpoints:FailsInWorker"), wait=False
    )
    started = time.monotonic()
    assert server.wait(20) == 3
    assert time.monotonic() - started < 15
    logs = server.logs()
    assert "this endpoint never starts in a worker" in logs
    assert "backing off" in logs
    assert "no worker could start" in logs
    assert "wsserver started" not in logs


# ---- signals -------------------------------------------------------------------------------


def test_term_closes_every_session_with_1001_and_leaves_no_process(prefork):
    port = free_port()
    server = prefork(config(port, workers=2, graceful=3), port)
    workers = server.wait_workers(2)
    clients = [pid_client(port)[0] for _ in range(20)]
    codes = []
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    for c in clients:
        with pytest.raises(Closed) as info:
            c.recv_text()
        codes.append(info.value.code)
        c.close()
    assert server.wait(3 + 1) == 0
    assert time.monotonic() - started < 3 + 1
    assert codes == [1001] * 20
    assert not [pid for pid in workers if alive(pid)]
    assert connect_refused(HOST, port)


def test_term_with_an_unresponsive_client_still_exits_in_time(prefork):
    port = free_port()
    server = prefork(config(port, workers=1, graceful=1, port_extra="close_timeout_ms = 60000"), port)
    client, _ = pid_client(port)  # never answers the close frame
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(1 + 1.5) == 0
    assert time.monotonic() - started < 1 + 1
    client.close()


def test_quit_stops_at_once(prefork):
    port = free_port()
    server = prefork(config(port, workers=2, graceful=30), port)
    workers = server.wait_workers(2)
    clients = [pid_client(port)[0] for _ in range(10)]
    started = time.monotonic()
    server.signal(signal.SIGQUIT)
    assert server.wait(3) == 0
    assert time.monotonic() - started < 2
    assert not [pid for pid in workers if alive(pid)]
    for c in clients:
        c.close()


def test_ttin_ttou_change_the_worker_count(prefork):
    port = free_port()
    server = prefork(config(port, workers=2), port)
    server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    server.signal(signal.SIGTTOU)
    server.wait_workers(2)
    server.signal(signal.SIGTTOU)  # (signals sent back to back may merge into one: wait between)
    server.wait_workers(1)
    server.signal(signal.SIGTTOU)  # never fewer than one
    time.sleep(0.5)
    assert len(server.workers()) == 1
    client, _ = pid_client(port)
    echo_ok(client, "one left")
    client.close()


def test_ttin_stops_at_the_worker_cap(prefork):
    port = free_port()
    # The cap lowered to 2 for this master (tests/support/capped_master.py): the same code
    # path as the real cap of 256, without forking that many workers.
    server = prefork(config(port, workers=2), port, module="tests.support.capped_master")
    workers = server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    server.wait_log(r'msg="one worker more refused: at the limit" workers=2 limit=2')
    time.sleep(0.5)
    assert server.workers() == workers
    assert 'one worker more"' not in server.logs()
    server.signal(signal.SIGTTOU)  # below the cap, TTIN works again
    server.wait_workers(1)
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)


def test_workers_flag_over_the_cap_is_refused(tmp_path):
    from wsserver.config import MAX_WORKERS

    for value in (MAX_WORKERS + 1, -1):
        out = subprocess.run(
            [sys.executable, "-m", "wsserver", "serve", "--workers", str(value)],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            timeout=30,
        )
        assert out.returncode == 2
        assert out.stderr.splitlines() == [f"--workers = {value}: must be an integer 0..{MAX_WORKERS}"]
        assert out.stdout == ""


def test_pid_file_and_reload_command(prefork, tmp_path):
    port = free_port()
    pid_file = tmp_path / "run" / "wsserver.pid"
    pid_file.parent.mkdir()
    server = prefork(config(port), port, args=("--pid", str(pid_file)))
    assert pid_file.read_text().strip() == str(server.pid)
    assert [p.name for p in pid_file.parent.iterdir()] == ["wsserver.pid"]  # no temp file left
    old = server.wait_workers(2)
    mark = len(server.logs())
    out = subprocess.run(
        [sys.executable, "-m", "wsserver", "reload", "--pid", str(pid_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert out.returncode == 0, out.stderr
    server.wait_log(r'msg="reload complete" gen=2', after=mark)
    wait_until(lambda: not set(server.workers()) & set(old), 5, what="the old workers gone")
    server.signal(signal.SIGTERM)
    assert server.wait(5) == 0
    assert not pid_file.exists()


def test_usr1_reopens_the_log_file(prefork, tmp_path):
    port = free_port()
    log_file = tmp_path / "wsserver.log"
    server = prefork(config(port, workers=2), port=None, args=("--log-file", str(log_file)))
    wait_until(
        lambda: log_file.exists() and "wsserver started" in log_file.read_text(),
        20,
        what="the server logging to its file",
    )
    workers = server.wait_workers(2)
    log_file.rename(tmp_path / "wsserver.log.1")
    server.signal(signal.SIGUSR1)
    wait_until(
        lambda: log_file.exists() and log_file.read_text().count("log file reopened") == 3,
        5,
        what="master and workers reopening the log file",
    )
    text = log_file.read_text()
    assert all(f"pid={pid}" in text for pid in [server.pid, *workers])


# ---- reload --------------------------------------------------------------------------------


def test_reload_under_load_is_hitless(prefork):
    graceful = 3.0
    port = free_port()
    server = prefork(config(port, workers=2, graceful=graceful), port)
    server.wait_workers(2)
    stop = threading.Event()
    errors: list[str] = []
    closes: list[tuple[int, int, float]] = []  # (worker pid, close code, wall time)
    handshakes = collections.Counter()
    echoed = collections.Counter()

    def echo_forever(n: int) -> None:
        seq = 0
        while not stop.is_set():
            try:
                client, pid = pid_client(port)
                handshakes["ok"] += 1
            except Exception as exc:
                errors.append(f"echo client {n}: handshake: {exc!r}")
                return
            try:
                while not stop.is_set():
                    for i in range(3):  # a few in flight: order is checked too
                        client.send_text(f"{n}:{seq + i}")
                    for i in range(3):
                        got = client.recv_text()
                        if got != f"{n}:{seq + i}":
                            errors.append(f"echo client {n}: expected {n}:{seq + i}, got {got}")
                            return
                    seq += 3
                    echoed["messages"] += 3
                    time.sleep(0.01)
                client.close_normally()
            except Closed as exc:
                closes.append((pid, exc.code, time.time()))
                client.close()
                if exc.code != 1001:
                    errors.append(f"echo client {n}: closed with {exc.code}")
                    return
            except Exception as exc:
                errors.append(f"echo client {n}: {exc!r}")
                return

    def new_connections() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                client, _ = pid_client(port)
                echo_ok(client, "hello")
                client.close_normally()
                handshakes["new"] += 1
            except Exception as exc:
                errors.append(f"new connection: {exc!r}")
            time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))  # 20 per second

    threads = [threading.Thread(target=echo_forever, args=(n,)) for n in range(50)]
    threads.append(threading.Thread(target=new_connections))
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        for _ in range(5):
            server.reload(timeout=20)
            time.sleep(0.3)
        # Let the last generation's predecessors reach graceful_timeout.
        time.sleep(graceful + 1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert errors == []
    assert handshakes["new"] >= 20 * 5
    assert echoed["messages"] > 1000
    logs = server.logs()
    assert logs.count('msg="reload complete"') == 5
    # Every 1001 came from a draining worker, and not before graceful_timeout after the drain began.
    drain_started = {}
    import re

    for m in re.finditer(r'msg="worker draining" pid=(\d+)', logs):
        drain_started.setdefault(int(m.group(1)), log_time(m, logs))
    assert closes, "no session was on an old worker at the end of the test"
    for pid, code, when in closes:
        assert code == 1001
        assert pid in drain_started
        assert when - drain_started[pid] >= graceful - 0.1, (pid, when - drain_started[pid])


def test_reload_with_a_broken_config_changes_nothing(prefork):
    port = free_port()
    server = prefork(config(port), port)
    workers = server.wait_workers(2)
    client, _ = pid_client(port)
    good = server.config_path.read_text()
    for broken, error in [
        (good.replace("graceful_timeout = 3", "graceful_timeout = -1"), "graceful_timeout = -1"),
        (good.replace(PID_ECHO, "no_such_module_xyz:Nope"), "cannot import module 'no_such_module_xyz'"),
        ("[server\n", "wsserver.toml"),
        ("", "no [[ports]] declared"),  # truncated to nothing (a full disk, an editor crash)
        ("# emptied\n[server]\ngraceful_timeout = 3\n", "no [[ports]] declared"),
    ]:
        mark = len(server.logs())
        server.write_config(broken)
        server.signal(signal.SIGHUP)
        m = server.wait_log(r'msg="reload aborted: the running configuration is unchanged"', after=mark)
        assert error in server.logs()[mark : m.end()]
        assert server.workers() == workers
        echo_ok(client, "still here")
    client.close()
    server.write_config(good)
    server.reload()


def test_reload_whose_workers_cannot_start_keeps_the_old_generation(prefork):
    port = free_port()
    server = prefork(config(port), port)
    workers = server.wait_workers(2)
    client, _ = pid_client(port)
    server.write_config(config(port, handler="tests.support.prefork_endpoints:FailsInWorker"))
    mark = len(server.logs())
    server.signal(signal.SIGHUP)
    server.wait_log(r'msg="reload failed: the new workers did not start', timeout=20, after=mark)
    echo_ok(client, "old generation")
    wait_until(lambda: server.workers() == workers, 5, what="only the old workers left")
    c2, pid = pid_client(port)
    assert pid in workers
    c2.close()
    client.close()


def test_command_line_settings_stay_in_force_across_reloads(prefork):
    """--workers and --log-format override the file at start and at every reload (the flags come
    from the settings registry and are applied to each load of the file)."""
    port = free_port()
    server = prefork(config(port, workers=3), port, args=("--workers", "1", "--log-format", "json"))
    first = server.wait_workers(1)
    server.write_config(config(port, workers=2, server='log_format = "text"'))
    mark = len(server.logs())
    server.signal(signal.SIGHUP)
    server.wait_log(r'"msg": "reload complete"', timeout=15, after=mark)  # still JSON
    wait_until(lambda: server.workers() != first, 10, what="the new generation")
    time.sleep(0.5)  # a second worker, if one were started, would be up by now
    assert len(server.workers()) == 1
    assert 'msg="' not in server.logs()[mark:]


def test_reload_adds_and_removes_ports(prefork):
    port, extra = free_port(), free_port()
    server = prefork(config(port), port)
    assert connect_refused(HOST, extra)
    added = f'[[ports]]\nalias = "extra"\nport = {extra}\nbind = "{HOST}"\n'
    server.write_config(config(port, ports=added))
    server.reload()
    client, _ = pid_client(extra)
    echo_ok(client, "new port")
    client.close()

    server.write_config(config(port, port_extra="enabled = false", ports=added))
    server.reload()
    wait_until(lambda: connect_refused(HOST, port), 5, what="the disabled port refusing")
    client, _ = pid_client(extra)
    echo_ok(client, "kept port")
    client.close()


def test_reload_picks_up_new_endpoint_code(prefork, tmp_path):
    port = free_port()
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    module = module_dir / "versioned_ep.py"
    source = (
        "from wsserver import Endpoint\n\nclass Hello(Endpoint):\n"
        "    def on_text(self, session, text):\n        session.send({version!r})\n"
    )
    module.write_text(source.format(version="v1"))
    server = PreforkServer(
        tmp_path, config(port, handler="versioned_ep:Hello"), pythonpath=(str(module_dir),)
    )
    try:
        server.start(wait_for=(HOST, port), timeout=20)
        c = Client(HOST, port, "/echo")
        c.send_text("?")
        assert c.recv_text() == "v1"
        c.close()
        # A different size and a later mtime: Python's .pyc check (mtime + size, 1 s resolution)
        # must not take the new source for the cached old one.
        module.write_text(source.format(version="version-2"))
        later = time.time() + 2
        os.utime(module, (later, later))
        server.reload()
        # Old workers drain after the reload completes: within a bounded time every new
        # connection reaches the new generation, which runs the new code.
        answers = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            c = Client(HOST, port, "/echo")
            c.send_text("?")
            answers.append(c.recv_text())
            c.close()
            if answers[-1] == "version-2":
                break
            time.sleep(0.1)
        assert answers[-1] == "version-2", answers
        assert set(answers) <= {"v1", "version-2"}
    finally:
        server.stop()


# ---- broadcast -----------------------------------------------------------------------------


def test_broadcast_reaches_every_worker_in_order(prefork):
    port = free_port()
    server = prefork(
        config(port, workers=3, handler="tests.support.prefork_endpoints:PidChat", path="/chat"), port
    )
    workers = server.wait_workers(3)
    members: dict[int, Client] = {}
    extra: list[Client] = []
    deadline = time.monotonic() + 20
    while len(members) < 3 and time.monotonic() < deadline:
        client, pid = pid_client(port, "/chat")
        if pid in members:
            extra.append(client)
        else:
            members[pid] = client
    assert sorted(members) == workers
    for c in extra:
        c.close_normally()
    time.sleep(0.2)
    clients = list(members.values())
    per_client = 50
    for n in range(per_client):
        for i, c in enumerate(clients):
            c.send_text(f"{i}:{n}")
    for c in clients:
        got = [c.recv_text() for _ in range(per_client * len(clients))]
        for i in range(len(clients)):
            assert [m for m in got if m.startswith(f"{i}:")] == [f"{i}:{n}" for n in range(per_client)]
    for c in clients:
        c.close_normally()


def test_chat_rooms_are_separate(prefork):
    port = free_port()
    prefork(config(port, workers=2, handler="wsserver.endpoints.chat:Chat", path="/chat"), port)
    kitchen1 = Client(HOST, port, "/chat?room=kitchen")
    kitchen2 = Client(HOST, port, "/chat?kitchen")
    lobby = Client(HOST, port, "/chat")
    time.sleep(0.2)
    kitchen1.send_text("in the kitchen")
    assert kitchen1.recv_text() == "in the kitchen"
    assert kitchen2.recv_text() == "in the kitchen"
    lobby.send_text("in the lobby")
    assert lobby.recv_text() == "in the lobby"  # and not the kitchen's message before it
    kitchen2.send_text("still here")
    assert kitchen1.recv_text() == "still here"
    for c in (kitchen1, kitchen2, lobby):
        c.close_normally()


def test_no_orphans_when_the_master_is_killed(prefork):
    port = free_port()
    server = prefork(config(port, workers=2, graceful=1), port)
    workers = server.wait_workers(2)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(5)
    wait_until(lambda: not [pid for pid in workers if alive(pid)], 5, what="the orphaned workers exiting")
    assert children_of(server.pid) == []


# ---- the relay's frames and a worker's group registry (no processes) ------------------------


def test_relay_frames_round_trip_in_pieces():
    from wsserver.prefork import relay

    stream = (
        relay.encode_publish("room", "héllo")
        + relay.encode_publish("r2", b"\x00\xff")
        + relay.frame(relay.READY)
        + relay.encode_drain(2.5)
    )
    reader = relay.FrameReader()
    frames = []
    for i in range(0, len(stream), 3):  # any split of the byte stream
        frames += list(reader.feed(stream[i : i + 3]))
    assert [kind for kind, _, _ in frames] == [relay.PUBLISH, relay.PUBLISH, relay.READY, relay.DRAIN]
    assert relay.decode_publish(frames[0][1]) == ("room", "héllo")
    assert relay.decode_publish(frames[1][1]) == ("r2", b"\x00\xff")
    assert relay.decode_drain(frames[3][1]) == 2.5
    assert b"".join(raw for _, _, raw in frames) == stream
    with pytest.raises(relay.RelayError):
        list(relay.FrameReader().feed(b"\x00\x00\x00\x00\x09"))


def test_load_board_has_a_cell_for_every_worker_up_to_the_cap_and_then_none():
    from wsserver.config import MAX_WORKERS
    from wsserver.prefork.worker import LoadBoard

    board = LoadBoard()
    assert LoadBoard.CELLS - 1 >= 2 * MAX_WORKERS  # a generation at the cap and one draining
    in_use: set[int] = set()
    while (cell := board.take(in_use)) is not None:
        in_use.add(cell)
    assert len(in_use) == LoadBoard.CELLS - 1
    board.free(7, in_use - {7})
    assert board.take(in_use - {7}) == 7


def test_pid_file_is_replaced_atomically_refused_while_taken_and_removed_only_by_its_owner(tmp_path):
    from wsserver.prefork.pidfile import PidFileTaken, read_pid_file, remove_pid_file, write_pid_file

    path = str(tmp_path / "wsserver.pid")
    assert read_pid_file(path) is None
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    (tmp_path / "wsserver.pid").write_text(dead.stdout)  # a stale file: its process is gone
    write_pid_file(path, os.getpid())
    assert read_pid_file(path) == os.getpid()
    assert os.listdir(tmp_path) == ["wsserver.pid"]
    with pytest.raises(PidFileTaken, match="names a running process"):
        write_pid_file(path, os.getpid() + 1)  # we are alive: another master must not take it
    remove_pid_file(path, os.getpid() + 1)  # not its file
    assert read_pid_file(path) == os.getpid()
    remove_pid_file(path, os.getpid())
    assert not os.path.exists(path)


def test_groups_publish_locally_and_through_the_hook(groups):
    class FakeSession:
        def __init__(self, name):
            self.id = name
            self.got = []

        def send_encoded(self, message, frame):
            # One frame for every member: the message's own uncompressed encoding.
            assert frame == encode_message(message)
            self.got.append(message)

    from wsserver.protocol import encode_message

    a, b = FakeSession("a"), FakeSession("b")
    relayed = []
    groups.set_relay(lambda group, message: relayed.append((group, message)))
    groups.join(a, "g")
    groups.join(b, "g")
    groups.join(b, "other")
    assert groups.publish("g", "1") == 2
    groups.leave(a, "g")
    groups.publish("g", "2")
    groups.leave_all(b)
    assert groups.publish_local("g", "3") == 0
    assert a.got == ["1"] and b.got == ["1", "2"]
    assert relayed == [("g", "1"), ("g", "2")]
    assert groups.members("g") == [] and groups.groups_of(b) == frozenset()
