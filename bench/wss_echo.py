"""wss vs ws through the whole server: echo messages/s and handshakes/s, and the ratio.

One ``wsserver serve`` (1 worker, pinned to core 0) with a ws port and a wss port (PEM key made
with trustme, compression off so only TLS differs); the picows load generator (bench.loadgen,
pinned to core 1) drives each port in turn. Printed per test: client-side rate, the server's
CPU µs per operation (worker + master, from /proc), and wss/ws ratios.

    .venv/bin/python bench/wss_echo.py [--duration 3] [--conns 16] [--sizes 32,16384]

The TLS transport itself (pyOpenSSL vs gevent's ssl, no WebSocket) is measured by
bench/tls_micro.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            for child in children:
                pids += tree(int(child))
    except OSError:
        pass
    return pids


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def write_config(d: Path, ws: int, wss: int) -> Path:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    (d / "server.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(d / "server.key"))
    cfg = d / "wsserver.toml"
    cfg.write_text(f"""
[server]
workers = 1
graceful_timeout = 2
[server.tls]
keystore = "bench"
key_alias = "server"
[[keystores]]
alias = "bench"
type = "pem"
[keystores.keys.server]
cert = "server.crt"
key = "server.key"
[[endpoints]]
path = "/echo"
handler = "wsserver.endpoints.echo:Echo"
[[ports]]
alias = "ws"
port = {ws}
bind = "127.0.0.1"
compression = false
idle_timeout_ms = 0
ping_interval_ms = 0
[[ports]]
alias = "wss"
protocol = "wss"
port = {wss}
bind = "127.0.0.1"
compression = false
idle_timeout_ms = 0
ping_interval_ms = 0
""")
    return cfg


def start_server(cfg: Path, log: Path, ports: tuple[int, ...]) -> subprocess.Popen:
    cmd = [*pin(0), sys.executable, "-m", "wsserver", "serve", "-c", str(cfg)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        if "wsserver started" in log.read_text(errors="replace"):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def run_load(
    server: subprocess.Popen, scenario: str, url: str, args: argparse.Namespace, size: int, client: str
) -> dict:
    cmd = [
        *pin(1),
        sys.executable,
        "-m",
        "bench.loadgen",
        "--scenario",
        scenario,
        "--client",
        client,
        "--url",
        url,
        "--conns",
        str(args.conns),
        "--size",
        str(size),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
        "--insecure",
    ]
    gen = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(gen.stdout.readline())
        assert ready["event"] == "ready", ready
        go = time.time() + 0.2
        gen.stdin.write(f"go {go}\n")
        gen.stdin.flush()
        time.sleep(max(0.0, go + args.warmup - time.time()))
        pids = tree(server.pid)
        cpu0 = sum(cpu_seconds(p) for p in pids)
        time.sleep(max(0.0, go + args.warmup + args.duration - time.time()))
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        result = json.loads(gen.stdout.readline())
        gen.stdin.write("close\n")
        gen.stdin.flush()
    finally:
        try:
            gen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gen.kill()
            gen.wait()
    count = max(result["count"], 1)
    return {
        "rate": result["count"] / result["elapsed"],
        "server_us": cpu / count * 1e6,
        "errors": result["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--sizes", default="32,16384")
    args = parser.parse_args()
    ws, wss = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        server = start_server(write_config(d, ws, wss), d / "server.log", (ws, wss))
        try:
            tests = [("echo", size, "picows") for size in map(int, args.sizes.split(","))]
            tests.append(("handshake", 32, "raw"))
            print(
                f"wsserver 1 worker (core 0), bench.loadgen (core 1), {args.conns} connections, "
                f"{args.duration}s windows, compression off"
            )
            print(
                f"{'test':<18}{'ws ops/s':>10}{'wss ops/s':>11}{'ws µs/op':>10}{'wss µs/op':>11}"
                f"{'rate wss/ws':>13}{'cpu wss/ws':>12}"
            )
            for scenario, size, client in tests:
                plain = run_load(server, scenario, f"ws://127.0.0.1:{ws}/echo", args, size, client)
                tls = run_load(server, scenario, f"wss://127.0.0.1:{wss}/echo", args, size, client)
                name = f"echo {size} B" if scenario == "echo" else "handshake"
                errors = plain["errors"] + tls["errors"]
                print(
                    f"{name:<18}{plain['rate']:>10.0f}{tls['rate']:>11.0f}{plain['server_us']:>10.1f}"
                    f"{tls['server_us']:>11.1f}{tls['rate'] / plain['rate']:>13.2f}"
                    f"{tls['server_us'] / plain['server_us']:>12.2f}"
                    + (f"  errors={errors}" if errors else "")
                )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()
