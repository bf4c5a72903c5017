#!/usr/bin/env python3
"""Soak test: echo clients that reconnect all the time, against a server that is reloaded and loses workers.

    .venv/bin/python bench/soak.py                          # 600 s, 200 clients, HUP every 30 s, kill -9 every 45 s
    .venv/bin/python bench/soak.py --seconds 180
    .venv/bin/python bench/soak.py --seconds 60 --clients 50 --hup-every 10 --kill-every 15

The script starts its own ``wsserver serve -c FILE`` (a temporary TOML file: ``--workers`` workers, one ws port
on 127.0.0.1 with the built-in ``wsserver.endpoints.echo:Echo`` on /echo, no metrics, no admin) and
``--procs`` client processes (asyncio + the ``websockets`` client) holding ``--clients`` connections in all.

Each connection sends numbered text messages ``c<conn>-<seq>`` with up to ``--window`` unanswered at a
time, checks that every echo comes back in order, and closes itself (1000) once every echo of a random
number of messages (``--min-msgs``..``--max-msgs``) is back; then it connects again. Meanwhile the
master gets SIGHUP every ``--hup-every`` seconds (a hitless reload: a new generation, the old one
drains) and one worker, picked at random among the master's children (found in /proc), gets
SIGKILL every ``--kill-every`` seconds. Before the SIGKILL the worker is SIGSTOPped and the client
ports of its TCP sockets are read from /proc (its fds, /proc/net/tcp): a connection on one of those
ports that ends without a close frame after that kill is "at a kill", and its unanswered messages
are counted as "in flight at a worker kill", not as lost.

Counted: messages sent and echoed; **lost** = messages without their echo on a connection that
  - got a close frame from the server (any code, e.g. 1001 from a draining generation), unless
    they crossed it (below), or
  - ended without a close frame (1006) but not at a kill, or
  - stalled: no echo for ``--recv-timeout`` seconds while messages were outstanding;
**reordered** = an echo that is not the oldest outstanding message of its connection; handshake
failures by cause (refused, timeout, HTTP status, reset, and how many of them were at a kill);
connections, reconnects (connections after the first of each client), kills, HUPs and close codes.
Every ``--report-every`` seconds a line shows the elapsed time, msgs/s, the totals, and VmRSS and
the number of open fds of the master and of every worker (gen N as in its process title).
Messages unanswered at a server close frame are checked against the server's own count: the server
runs at log level debug and logs ``session closed ... peer=127.0.0.1:PORT messages_in=N messages_out=M``.
If N == M == the echoes the client got, the unanswered messages reached the server after its close
frame and were not taken (RFC 6455: nothing is delivered after a close frame is sent): they
"crossed the close frame" and are reported as such, not lost (``--strict`` counts them lost,
``--no-verify`` skips the check and counts them lost). Any other case is lost.
At the end a summary; the exit status is 1 if lost > 0, reordered > 0, an echo was unexpected
(duplicate or never sent) or the server died; else 0.

Only processes this script started are signalled: the server's master by its PID, its workers by
PID after checking each is still a child of that master (and, at the end, each child it saw, by PID
and start time). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONFIG = """\
[server]
workers = {workers}
graceful_timeout = {graceful}
log_level = "{log_level}"

[metrics]
enabled = false

[admin]
enabled = false

[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"

[[ports]]
alias = "soak"
bind = "127.0.0.1"
port = {port}
backlog = 4096
compression = false
"""

COUNTERS = (
    "sent",
    "echoed",
    "reordered",
    "unexpected",
    "conns",
    "reconnects",
    "client_closes",
    "lost_server_close",
    "lost_abnormal",
    "lost_stalled",
    "stalls",
    "hs_refused",
    "hs_timeout",
    "hs_reset",
    "hs_other",
    "hs_at_kill",
    "inflight_at_kill",
    "conns_at_kill",
)


# --------------------------------------------------------------------------------------------- /proc


def stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # from the 3rd field (state) on


def start_time(pid: int) -> str | None:
    fields = stat_fields(pid)
    return None if fields is None or fields[0] in ("Z", "X") else fields[19]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(target[8:-1])
    except OSError:
        pass
    return out


def peer_ports(pid: int, server_port: int) -> set[int]:
    """Remote (client) ports of the TCP connections to ``server_port`` held open by ``pid``."""
    inodes = socket_inodes(pid)
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 9 and parts[9] in inodes:
                        local_port = int(parts[1].rsplit(":", 1)[1], 16)
                        remote_port = int(parts[2].rsplit(":", 1)[1], 16)
                        if local_port == server_port and remote_port:
                            ports.add(remote_port)
        except OSError:
            pass
    return ports


# --------------------------------------------------------------------------------------------- clients


def client_main(
    index: int,
    args: argparse.Namespace,
    url: str,
    first_id: int,
    count: int,
    events: mp.Queue,
    stop: mp.Event,
    t_end: float,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    asyncio.run(ClientProc(index, args, url, first_id, count, events, stop, t_end).run())


class ClientProc:
    def __init__(self, index, args, url, first_id, count, events, stop, t_end) -> None:
        self.index, self.args, self.url = index, args, url
        self.first_id, self.count = first_id, count
        self.events, self.stop_event, self.t_end = events, stop, t_end
        self.c = dict.fromkeys(COUNTERS, 0)
        self.codes: collections.Counter[str] = collections.Counter()
        self.http: collections.Counter[str] = collections.Counter()
        self.stopping = False
        self.rng = random.Random(os.getpid() ^ int(time.time() * 1e6))

    def snapshot(self) -> tuple:
        return ("stats", self.index, dict(self.c), dict(self.codes), dict(self.http))

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.client(self.first_id + i)) for i in range(self.count)]
        while not self.stop_event.is_set() and time.time() < self.t_end + 60:
            self.events.put(self.snapshot())
            await asyncio.sleep(0.5)
        self.stopping = True
        # Every connection finishes its outstanding echoes (bounded), closes with 1000 and returns.
        _, pending = await asyncio.wait(tasks, timeout=self.args.recv_timeout + 5)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        self.events.put(self.snapshot())
        self.events.put(("done", self.index))

    async def client(self, cid: int) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        first = True
        await asyncio.sleep(self.rng.random() * 2)  # spread the first handshakes
        while not self.stopping:
            if not first:
                self.c["reconnects"] += 1
            first = False
            t_start = time.time()
            try:
                ws = await connect(
                    self.url,
                    open_timeout=self.args.open_timeout,
                    compression=None,
                    ping_interval=None,
                    close_timeout=5,
                    max_queue=64,
                )
            except ConnectionRefusedError:
                self.c["hs_refused"] += 1
                await asyncio.sleep(0.1)
                continue
            except TimeoutError:
                self.c["hs_timeout"] += 1
                continue
            except InvalidStatus as exc:
                self.http[str(exc.response.status_code)] += 1
                await asyncio.sleep(0.1)
                continue
            except (ConnectionError, EOFError, OSError) as exc:
                self.c["hs_reset"] += 1
                self.events.put(("hsfail", t_start, time.time(), type(exc).__name__, None))
                await asyncio.sleep(0.05)
                continue
            except Exception as exc:  # InvalidMessage (EOF during the handshake), ...
                self.c["hs_other"] += 1
                self.events.put(("hsfail", t_start, time.time(), f"{type(exc).__name__}: {exc}"[:120], None))
                await asyncio.sleep(0.05)
                continue
            self.c["conns"] += 1
            local_port = ws.local_address[1]
            try:
                await self.converse(ws, cid, local_port, t_start, ConnectionClosed)
            finally:
                if ws.transport is not None and not ws.transport.is_closing():
                    ws.transport.abort()

    async def converse(self, ws, cid: int, local_port: int, t_start: float, ConnectionClosed) -> None:
        args = self.args
        target = self.rng.randint(args.min_msgs, args.max_msgs)
        outstanding: collections.deque[int] = collections.deque()
        seq = 0
        prefix = f"c{cid}-"
        sending = True
        try:
            while True:
                while sending and not self.stopping and seq < target and len(outstanding) < args.window:
                    try:
                        await ws.send(f"{prefix}{seq}")
                    except ConnectionClosed:
                        # The server's close frame is in: echoes read with it may still wait in the
                        # client's queue (websockets hands them out before raising): collect them.
                        sending = False
                        break
                    outstanding.append(seq)
                    seq += 1
                    self.c["sent"] += 1
                if not outstanding:
                    if not sending:
                        await ws.recv()  # raises ConnectionClosed, with the close frame
                    break
                try:
                    msg = await asyncio.wait_for(ws.recv(), args.recv_timeout)
                except TimeoutError:
                    self.c["stalls"] += 1
                    self.c["lost_stalled"] += len(outstanding)
                    self.events.put(("stall", local_port, t_start, time.time(), len(outstanding), prefix))
                    return
                if not isinstance(msg, str) or not msg.startswith(prefix):
                    self.c["unexpected"] += 1
                    continue
                try:
                    got = int(msg[len(prefix) :])
                except ValueError:
                    self.c["unexpected"] += 1
                    continue
                if got == outstanding[0]:
                    outstanding.popleft()
                    self.c["echoed"] += 1
                elif got in outstanding:
                    outstanding.remove(got)
                    self.c["echoed"] += 1
                    self.c["reordered"] += 1
                else:
                    self.c["unexpected"] += 1  # a duplicate, or never sent
            await ws.close(1000)
            self.c["client_closes"] += 1
            self.codes["client 1000"] += 1
        except ConnectionClosed as exc:
            t_end = time.time()
            n = len(outstanding)
            if exc.rcvd is not None:  # the server sent a close frame
                code = exc.rcvd.code
                self.codes[f"server {code}"] += 1
                if n:
                    self.c["lost_server_close"] += n
                    self.events.put(
                        (
                            "lost",
                            "server-close",
                            code,
                            exc.rcvd.reason,
                            local_port,
                            t_start,
                            t_end,
                            n,
                            prefix,
                            seq,
                        )
                    )
            else:  # no close frame: a killed worker (expected) or something else (lost)
                self.codes["1006 (no close frame)"] += 1
                self.events.put(("abnormal", local_port, t_start, t_end, n, prefix, seq))


# --------------------------------------------------------------------------------------------- server


class Server:
    """The ``wsserver serve`` we start; signalled by its PID only, its workers by PID once verified."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.config = workdir / "soak.toml"
        self.config.write_text(
            CONFIG.format(
                workers=args.workers,
                graceful=args.graceful_timeout,
                port=self.port,
                log_level="info" if args.no_verify else "debug",
            )
        )
        self.log_path = workdir / "server.log"
        self.workers = args.workers
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child holds it
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wsserver", "serve", "-c", str(self.config)],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.pid = self.proc.pid
        self.seen: dict[int, str] = {}  # child pid -> start time

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echo"

    def children(self) -> list[int]:
        pids = children_of(self.pid)
        for pid in pids:
            st = start_time(pid)
            if st is not None:
                self.seen.setdefault(pid, st)
        return pids

    def worker_info(self) -> list[tuple[int, str]]:
        """(pid, generation) of every worker child."""
        out = []
        for pid in self.children():
            title = cmdline(pid)
            if "admin" in title:
                continue
            gen = title.split("gen", 1)[1].strip(" ]") if "gen" in title else "?"
            out.append((pid, gen))
        return out

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_tail(5)}")
            if len(self.worker_info()) >= self.workers:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    time.sleep(0.5)
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout:.0f} s: {self.log_tail(5)}")

    def log_tail(self, n: int) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""

    def is_our_child(self, pid: int) -> bool:
        fields = stat_fields(pid)
        return fields is not None and int(fields[1]) == self.pid and self.seen.get(pid) == fields[19]

    def hup(self) -> None:
        os.kill(self.pid, signal.SIGHUP)

    def kill_one(self, rng: random.Random) -> tuple[int, str, set[int]] | None:
        """SIGSTOP a random worker, read its client ports, SIGKILL it. (pid, gen, ports) or None."""
        # Only processes titled "worker": not the short-lived child that checks the handlers at a reload,
        # nor a worker so new that its title is not set yet.
        workers = [(pid, gen) for pid, gen in self.worker_info() if "worker" in cmdline(pid)]
        if not workers:
            return None
        pid, gen = rng.choice(workers)
        if not self.is_our_child(pid):
            return None
        os.kill(pid, signal.SIGSTOP)  # no accept, no send between the snapshot and the kill
        try:
            ports = peer_ports(pid, self.port)
        finally:
            os.kill(pid, signal.SIGKILL)
        return pid, gen, ports

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.children()
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        for pid, st in self.seen.items():
            if start_time(pid) == st:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return self.proc.returncode


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0, help="length of the run (default 600)")
    p.add_argument("--clients", type=int, default=200, help="concurrent connections (default 200)")
    p.add_argument("--procs", type=int, default=2, choices=(1, 2), help="client processes (default 2)")
    p.add_argument("--workers", type=int, default=2, help="server workers (default 2)")
    p.add_argument(
        "--hup-every", type=float, default=30.0, help="SIGHUP the master every N s; 0 = never (default 30)"
    )
    p.add_argument(
        "--kill-every", type=float, default=45.0, help="SIGKILL one worker every N s; 0 = never (default 45)"
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=5.0,
        help="[server] graceful_timeout: how long a draining generation keeps its sessions before 1001 "
        "(default 5, shorter than most connections, so every reload closes some with 1001)",
    )
    p.add_argument("--window", type=int, default=2, help="messages in flight per connection (default 2)")
    p.add_argument("--min-msgs", type=int, default=50, help="fewest messages per connection (default 50)")
    p.add_argument("--max-msgs", type=int, default=500, help="most messages per connection (default 500)")
    p.add_argument("--open-timeout", type=float, default=10.0, help="handshake timeout, s (default 10)")
    p.add_argument(
        "--recv-timeout",
        type=float,
        default=15.0,
        help="no echo for this long with messages outstanding = a stall, counted lost (default 15)",
    )
    p.add_argument("--report-every", type=float, default=10.0, help="progress line interval, s (default 10)")
    p.add_argument("--seed", type=int, default=None, help="seed for picking the worker to kill")
    p.add_argument("--keep-log", metavar="FILE", help="copy the server log here at the end")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="server log level info instead of debug: unanswered messages at a server close are then "
        "all counted lost, without checking the server's own count (see above)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="count messages that crossed the server's close frame as lost too",
    )
    args = p.parse_args(argv)
    if args.clients < 1 or args.window < 1 or not 1 <= args.min_msgs <= args.max_msgs or args.seconds <= 0:
        p.error("need --clients >= 1, --window >= 1, 1 <= --min-msgs <= --max-msgs, --seconds > 0")
    return args


class Totals:
    def __init__(self) -> None:
        self.per_proc: dict[int, tuple[dict, dict, dict]] = {}
        self.kills: list[tuple[float, int, str, set[int]]] = []  # time, pid, gen, client ports
        self.hups: list[float] = []
        self.pending_abnormal: list[tuple] = []
        self.inflight_at_kill = 0
        self.conns_at_kill = 0
        self.lost_abnormal = 0
        self.hs_at_kill = 0
        self.details: list[str] = []
        self.hs_details: collections.Counter[str] = collections.Counter()
        self.server_closes: list[tuple] = []  # server close frames with messages unanswered
        self.crossed = 0  # of those: proven (server log) never taken by the server
        self.lost_close = 0  # the others: lost
        self.crossed_conns = 0

    def sum(self) -> tuple[dict, collections.Counter, collections.Counter]:
        c = dict.fromkeys(COUNTERS, 0)
        codes: collections.Counter[str] = collections.Counter()
        http: collections.Counter[str] = collections.Counter()
        for counters, cc, hh in self.per_proc.values():
            for k, v in counters.items():
                c[k] += v
            codes.update(cc)
            http.update(hh)
        c["inflight_at_kill"] = self.inflight_at_kill
        c["conns_at_kill"] = self.conns_at_kill
        c["lost_abnormal"] = self.lost_abnormal
        c["hs_at_kill"] = self.hs_at_kill
        return c, codes, http

    def lost(self) -> int:
        c, _, _ = self.sum()
        at_close = c["lost_server_close"] if not self.verified else self.lost_close
        return at_close + c["lost_abnormal"] + c["lost_stalled"]

    verified = False

    def verify(self, log_text: str, strict: bool) -> None:
        """Match each server close that left messages unanswered with the server's ``session closed`` line
        (debug level: peer port, messages_in, messages_out). messages_in == messages_out == the echoes
        the client got: the unanswered messages reached the server after its close frame went out and
        were not delivered (RFC 6455: no data after a close frame), i.e. they crossed it. Otherwise, or
        with no matching line, they are lost."""
        closed: dict[int, list[tuple[float, int, int, str]]] = {}
        for m in SESSION_CLOSED.finditer(log_text):
            stamp, port, code, m_in, m_out = m.groups()
            t = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:23]) / 1000
            closed.setdefault(int(port), []).append((t, int(m_in), int(m_out), code))
        self.verified = True
        for ev in self.server_closes:
            _, _why, code, reason, port, t_start, t_end, n, prefix, seq = ev
            echoed = seq - n
            match = [x for x in closed.get(port, ()) if t_start - 1 <= x[0] <= t_end + 5]
            if len(match) > 1:
                # The client port was reused by a later connection within the window: the server's
                # line for this one is the one closest to when the client saw the close.
                match = [min(match, key=lambda x: abs(x[0] - t_end))]
            if len(match) == 1 and match[0][1] == echoed and match[0][2] == echoed and not strict:
                self.crossed += n
                self.crossed_conns += 1
                continue
            self.lost_close += n
            server = (
                f"server log: messages_in {match[0][1]}, messages_out {match[0][2]}"
                if match
                else "no matching server log line"
            )
            self.details.append(
                f"{fmt_t(t_end)} {prefix}: server close {code} {reason!r} with {n} unanswered "
                f"(port {port}, connection age {t_end - t_start:.1f} s, client sent {seq}, "
                f"got {echoed}; {server}); last HUP {last_before(self.hups, t_end)}, last kill "
                f"{last_before([k[0] for k in self.kills], t_end)}"
            )

    def at_kill(self, port: int | None, t_start: float, t_end: float) -> bool:
        for t_kill, _pid, _gen, ports in self.kills:
            if t_start - 0.05 <= t_kill <= t_end + 0.05 and (port is None or port in ports):
                return True
        return False

    def settle(self, now: float, final: bool = False) -> None:
        """Classify connections that ended without a close frame (a kill recorded after they ended waits 2 s)."""
        keep = []
        for ev in self.pending_abnormal:
            _, port, t_start, t_end, n, prefix, seq = ev
            if self.at_kill(port, t_start, t_end):
                self.conns_at_kill += 1
                self.inflight_at_kill += n
            elif final or now - t_end > 2.0:
                self.lost_abnormal += n
                self.details.append(
                    f"{fmt_t(t_end)} {prefix}: ended without a close frame, not at a kill "
                    f"(port {port}, {n} unanswered, last seq {seq - 1})"
                )
            else:
                keep.append(ev)
        self.pending_abnormal = keep


T0 = 0.0
SESSION_CLOSED = re.compile(
    r'^(\S+) debug .*?msg="session closed" .*?peer=127\.0\.0\.1:(\d+) .*?code=(\S+) '
    r".*?messages_in=(\d+) .*?messages_out=(\d+)",
    re.M,
)


def fmt_t(t: float) -> str:
    return f"t={t - T0:7.2f}s"


def handle(ev: tuple, totals: Totals) -> None:
    kind = ev[0]
    if kind == "stats":
        totals.per_proc[ev[1]] = (ev[2], ev[3], ev[4])
    elif kind == "abnormal":
        totals.pending_abnormal.append(ev)
    elif kind == "lost":
        totals.server_closes.append(ev)
    elif kind == "stall":
        _, port, t_start, t_end, n, prefix = ev
        totals.details.append(
            f"{fmt_t(t_end)} {prefix}: no echo for the recv timeout, {n} outstanding (port {port})"
        )
    elif kind == "hsfail":
        _, t_start, t_end, what, _ = ev
        if totals.at_kill(None, t_start, t_end):
            totals.hs_at_kill += 1
        totals.hs_details[what] += 1


def last_before(times: list[float], t: float) -> str:
    before = [x for x in times if x <= t]
    return f"{t - before[-1]:.2f} s before" if before else "none"


def proc_line(server: Server) -> str:
    parts = [f"master {rss_mib(server.pid):.1f}M/{fd_count(server.pid)}fd"]
    for pid, gen in server.worker_info():
        parts.append(f"w{pid}[g{gen}] {rss_mib(pid):.1f}M/{fd_count(pid)}fd")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    global T0
    args = parse_args(argv)
    rng = random.Random(args.seed)
    print(
        f"# wsserver soak: {args.seconds:.0f} s, {args.clients} clients in {args.procs} process(es), window "
        f"{args.window}, {args.min_msgs}-{args.max_msgs} msgs per connection; {args.workers} workers, "
        f"graceful_timeout {args.graceful_timeout:g} s; HUP every {args.hup_every:g} s, kill -9 every "
        f"{args.kill_every:g} s; {os.cpu_count()} CPUs, load {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
        flush=True,
    )
    rss_start: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wsserver-soak-") as tmp:
        server = Server(args, Path(tmp))
        clients: list[mp.Process] = []
        totals = Totals()
        server_died = False
        try:
            server.wait_ready()
            print(f"# server master pid {server.pid}, port {server.port}; {proc_line(server)}", flush=True)
            rss_start = {"master": rss_mib(server.pid)}
            ctx = mp.get_context("fork")
            events: mp.Queue = ctx.Queue()
            stop = ctx.Event()
            T0 = time.time()
            t_end = T0 + args.seconds
            per = [
                args.clients // args.procs + (1 if i < args.clients % args.procs else 0)
                for i in range(args.procs)
            ]
            first = 0
            for i, n in enumerate(per):
                proc = ctx.Process(
                    target=client_main,
                    args=(i, args, server.url(), first, n, events, stop, t_end),
                    daemon=True,
                )
                proc.start()
                clients.append(proc)
                first += n
            next_hup = T0 + args.hup_every if args.hup_every > 0 else float("inf")
            next_kill = T0 + args.kill_every if args.kill_every > 0 else float("inf")
            next_report = T0 + args.report_every
            last_echoed, last_t = 0, T0
            while True:
                now = time.time()
                if now >= t_end:
                    break
                if server.proc.poll() is not None:
                    print(f"!! server exited with {server.proc.returncode}: {server.log_tail(5)}", flush=True)
                    server_died = True
                    break
                if now >= next_hup:
                    server.hup()
                    totals.hups.append(time.time())
                    print(f"{fmt_t(time.time())} HUP #{len(totals.hups)}", flush=True)
                    next_hup += args.hup_every
                if now >= next_kill:
                    killed = server.kill_one(rng)
                    if killed is not None:
                        pid, gen, ports = killed
                        totals.kills.append((time.time(), pid, gen, ports))
                        print(
                            f"{fmt_t(time.time())} kill -9 worker {pid} (gen {gen}) holding {len(ports)} "
                            f"connections",
                            flush=True,
                        )
                        next_kill += args.kill_every
                    else:
                        next_kill = time.time() + 0.2  # no titled worker right now (a reload): soon again
                try:
                    while True:
                        handle(events.get(timeout=0.05), totals)
                except queue.Empty:
                    pass
                totals.settle(time.time())
                if now >= next_report:
                    c, _, _ = totals.sum()
                    rate = (c["echoed"] - last_echoed) / max(1e-9, now - last_t)
                    last_echoed, last_t = c["echoed"], now
                    hs = c["hs_refused"] + c["hs_timeout"] + c["hs_reset"] + c["hs_other"]
                    if "workers" not in rss_start:
                        rss_start["workers"] = sum(rss_mib(p) for p, _ in server.worker_info())
                    print(
                        f"{fmt_t(now)} {rate:7.0f} msg/s sent {c['sent']} echoed {c['echoed']} lost "
                        f"{c['lost_abnormal'] + c['lost_stalled']} unanswered-at-close {c['lost_server_close']} "
                        f"reordered {c['reordered']} at-kill {c['inflight_at_kill']} conns "
                        f"{c['conns']} hs-fail {hs} hups {len(totals.hups)} kills {len(totals.kills)} | "
                        f"{proc_line(server)}",
                        flush=True,
                    )
                    next_report += args.report_every
            # Stop the load: each connection collects its outstanding echoes and closes with 1000.
            final_procs = proc_line(server)
            stop.set()
            deadline = time.time() + args.recv_timeout + 15
            done = 0
            while done < len(clients) and time.time() < deadline:
                try:
                    ev = events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if ev[0] == "done":
                    done += 1
                else:
                    handle(ev, totals)
            for proc in clients:
                proc.join(timeout=5)
            totals.settle(time.time(), final=True)
        finally:
            for proc in clients:
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout=5)
            code = server.stop()
            log_text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
            if args.keep_log:
                Path(args.keep_log).write_text(log_text)
        elapsed = time.time() - T0
    if not args.no_verify:
        totals.verify(log_text, args.strict)
    else:
        for ev in totals.server_closes:
            totals.details.append(
                f"{fmt_t(ev[6])} {ev[8]}: server close {ev[2]} with {ev[7]} unanswered (unverified)"
            )
    c, codes, http = totals.sum()
    lost = totals.lost()
    hs = c["hs_refused"] + c["hs_timeout"] + c["hs_reset"] + c["hs_other"] + sum(http.values())
    print("\n# summary")
    print(
        f"duration        {elapsed:.0f} s ({args.seconds:.0f} s of load), {args.clients} clients, window "
        f"{args.window}"
    )
    print(
        f"messages        sent {c['sent']}  echoed {c['echoed']}  ({c['echoed'] / max(1.0, args.seconds):.0f}/s)"
    )
    at_close = totals.lost_close if totals.verified else c["lost_server_close"]
    print(
        f"lost            {lost}  (at a server close frame: {at_close}, no close frame and not at a kill: "
        f"{c['lost_abnormal']}, stalled: {c['lost_stalled']} in {c['stalls']} stalls)"
    )
    print(
        f"crossed close   {totals.crossed} messages on {totals.crossed_conns} connections were sent before the "
        f"client saw the server's close frame and reached the server after it (server log: not taken; not lost)"
        if totals.verified
        else f"crossed close   not checked (--no-verify): {c['lost_server_close']} unanswered at server closes counted lost"
    )
    print(
        f"balance         sent - echoed = {c['sent'] - c['echoed']} = lost {lost} + at kills "
        f"{c['inflight_at_kill']} + crossed {totals.crossed}"
        f"{' (MISMATCH)' if c['sent'] - c['echoed'] != lost + c['inflight_at_kill'] + totals.crossed else ''}"
    )
    print(f"reordered       {c['reordered']}   unexpected echoes {c['unexpected']}")
    print(f"at worker kills {c['inflight_at_kill']} messages in flight on {c['conns_at_kill']} connections")
    print(
        f"connections     {c['conns']}  reconnects {c['reconnects']}  closed by the client {c['client_closes']}"
    )
    print(f"close codes     {dict(sorted(codes.items()))}")
    print(
        f"handshake fails {hs}: refused {c['hs_refused']}, timeout {c['hs_timeout']}, reset/eof "
        f"{c['hs_reset']}, other {c['hs_other']}, HTTP {dict(http)}; at a kill {c['hs_at_kill']}"
        + (f"; {dict(totals.hs_details)}" if totals.hs_details else "")
    )
    print(
        f"signals         HUP {len(totals.hups)}, kill -9 {len(totals.kills)} "
        f"({sum(len(k[3]) for k in totals.kills)} connections on the killed workers)"
    )
    print(
        f"processes       start: master {rss_start.get('master', 0):.1f}M, workers "
        f"{rss_start.get('workers', 0):.1f}M in all; end: {final_procs}"
    )
    reloads = log_text.count('msg="reload complete"')
    died = log_text.count("worker died")
    print(
        f"server log      reload complete x{reloads}, worker died x{died}, "
        f"drain timeout x{log_text.count('drain timeout')}, errors x{log_text.count('level=error')}; "
        f"master exit code {code}"
    )
    for line in totals.details[:30]:
        print(f"  {line}")
    if len(totals.details) > 30:
        print(f"  ... {len(totals.details) - 30} more")
    bad = lost > 0 or c["reordered"] > 0 or c["unexpected"] > 0 or server_died
    print("RESULT", "FAIL" if bad else "OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
