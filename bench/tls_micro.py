"""TLS transport micro-benchmark: pyOpenSSL on a gevent socket vs gevent's own ``ssl``.

A raw TCP echo server (no WebSocket) runs in a subprocess pinned to one core, in one of:
  plain      gevent socket recv/sendall (the baseline)
  pyopenssl  wsserver.runtime.tls.TLSSocket (pyOpenSSL Connection driven by gevent watchers),
             context from wsserver.security.tls.build_server_context
  geventssl  gevent.ssl (stdlib ssl + the system OpenSSL) with the same settings
A client subprocess pinned to the other core (gevent + stdlib ssl, the same for every mode)
measures request/response echo of small and large messages and full handshakes
(connect, TLS handshake, 1-byte echo, close). The figure to compare is the server's CPU time
per operation (µs, from /proc/PID/stat), which does not depend on how fast the client is.

    .venv/bin/python bench/tls_micro.py [--seconds 2] [--conns 8] [--sizes 32,16384] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("plain", "pyopenssl", "geventssl")


# --- server role ----------------------------------------------------------------------------


def serve(mode: str, key_type: str, certdir: str) -> None:
    from gevent import monkey

    monkey.patch_all()
    import socket as stdsocket
    import ssl

    import gevent
    from gevent import socket as gsocket
    from gevent.server import StreamServer

    cert_file, key_file = os.path.join(certdir, f"{key_type}.crt"), os.path.join(certdir, f"{key_type}.key")
    wrap = None
    if mode == "pyopenssl":
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        from wsserver.runtime.tls import TLSSocket
        from wsserver.security.keystores import KeyEntry
        from wsserver.security.tls import build_server_context

        certs = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
        ctx = build_server_context(KeyEntry("bench", key, certs[0], tuple(certs[1:])))  # type: ignore[arg-type]

        def wrap(sock):
            return TLSSocket(sock, ctx)
    elif mode == "geventssl":
        from wsserver.security.tls import DEFAULT_CIPHERS

        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.minimum_version = ssl.TLSVersion.TLSv1_2
        sctx.set_ciphers(DEFAULT_CIPHERS)
        sctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        sctx.set_alpn_protocols(["http/1.1"])
        sctx.load_cert_chain(cert_file, key_file)

        def wrap(sock):
            return sctx.wrap_socket(sock, server_side=True)

    def handle(sock, _addr):
        sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
        try:
            s = wrap(sock) if wrap else sock
            while True:
                data = s.recv(65536)
                if not data:
                    break
                s.sendall(data)
        except OSError:
            pass
        finally:
            try:
                (s if wrap else sock).close()
            except Exception:
                pass

    listener = gsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
    listener.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    server = StreamServer(listener, handle)
    server.start()
    print(listener.getsockname()[1], flush=True)
    from gevent.event import Event

    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    stop.wait()  # until the parent sends SIGTERM
    server.stop(timeout=1)


# --- client role ----------------------------------------------------------------------------


def client(mode: str, port: int, kind: str, size: int, seconds: float, conns: int, cafile: str) -> None:
    from gevent import monkey

    monkey.patch_all()
    import socket
    import ssl

    import gevent

    cctx = None
    if mode != "plain":
        cctx = ssl.create_default_context(cafile=cafile)
        cctx.set_alpn_protocols(["http/1.1"])
    counts = [0] * conns
    deadline = time.monotonic() + seconds
    errors = []

    def connect():
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cctx.wrap_socket(sock, server_hostname="localhost") if cctx else sock

    def read_exactly(s, n):
        got = 0
        while got < n:
            chunk = s.recv(n - got)
            if not chunk:
                raise ConnectionError("closed")
            got += len(chunk)

    def echo_loop(i):
        msg = os.urandom(size)
        try:
            s = connect()
            while time.monotonic() < deadline:
                s.sendall(msg)
                read_exactly(s, size)
                counts[i] += 1
            s.close()
        except Exception as exc:
            errors.append(repr(exc))

    def handshake_loop(i):
        try:
            while time.monotonic() < deadline:
                s = connect()
                s.sendall(b"x")
                read_exactly(s, 1)
                s.close()
                counts[i] += 1
        except Exception as exc:
            errors.append(repr(exc))

    started = time.monotonic()
    loop = echo_loop if kind == "echo" else handshake_loop
    gevent.joinall([gevent.spawn(loop, i) for i in range(conns)])
    print(json.dumps({"ops": sum(counts), "seconds": time.monotonic() - started, "errors": errors[:3]}))


# --- driver ---------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pin(core: int) -> list[str]:
    if os.cpu_count() and os.cpu_count() > 1 and _has("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def _has(cmd: str) -> bool:
    return any(os.access(os.path.join(d, cmd), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


def make_certs(certdir: str) -> str:
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(os.path.join(certdir, "ca.pem"))
    for name, key_type in (("ec", trustme.KeyType.ECDSA), ("rsa", trustme.KeyType.RSA)):
        ca_k = trustme.CA(key_type=key_type) if name == "rsa" else ca
        leaf = ca_k.issue_cert("localhost", "127.0.0.1", key_type=key_type)
        with open(os.path.join(certdir, f"{name}.crt"), "wb") as f:
            f.write(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(os.path.join(certdir, f"{name}.key"))
        if name == "rsa":
            ca_k.cert_pem.write_to_path(os.path.join(certdir, "ca-rsa.pem"))
    return os.path.join(certdir, "ca.pem")


def run_phase(mode: str, key_type: str, kind: str, size: int, args: argparse.Namespace, certdir: str) -> dict:
    me = [sys.executable, os.path.abspath(__file__)]
    server = subprocess.Popen(
        [*_pin(0), *me, "--serve", mode, "--key-type", key_type, "--certdir", certdir],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(server.stdout.readline())
        cafile = os.path.join(certdir, "ca-rsa.pem" if key_type == "rsa" else "ca.pem")
        before = _cpu_seconds(server.pid)
        out = subprocess.run(
            [
                *_pin(1),
                *me,
                "--client",
                mode,
                str(port),
                kind,
                str(size),
                str(args.seconds),
                str(args.conns),
                cafile,
            ],
            capture_output=True,
            text=True,
            timeout=args.seconds + 60,
        )
        cpu = _cpu_seconds(server.pid) - before
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    ops = max(result["ops"], 1)
    return {
        "mode": mode,
        "kind": kind,
        "size": size,
        "key": key_type,
        "ops_per_s": result["ops"] / result["seconds"],
        "server_us_per_op": cpu / ops * 1e6,
        "errors": result["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--sizes", default="32,16384")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeat", type=int, default=3, help="rounds per test; the best is printed")
    parser.add_argument("--serve")
    parser.add_argument("--key-type", default="ec")
    parser.add_argument("--certdir")
    parser.add_argument("--client", nargs=7)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.key_type, args.certdir)
        return
    if args.client:
        mode, port, kind, size, seconds, conns, cafile = args.client
        client(mode, int(port), kind, int(size), float(seconds), int(conns), cafile)
        return

    import ssl

    import OpenSSL
    from OpenSSL import SSL

    print(
        f"pyOpenSSL {OpenSSL.__version__} on {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}; "
        f"stdlib ssl on {ssl.OPENSSL_VERSION}; {os.cpu_count()} CPUs; {args.seconds}s per run, "
        f"{args.conns} connections, best of {args.repeat}"
    )
    modes = args.modes.split(",")
    rows = []
    plan = [("ec", "echo", int(size)) for size in args.sizes.split(",")]
    plan += [("ec", "handshake", 1), ("rsa", "handshake", 1)]
    with tempfile.TemporaryDirectory() as certdir:
        make_certs(certdir)
        for key_type, kind, size in plan:
            # Modes interleaved, --repeat rounds, the best round kept: host noise only adds time.
            runs = [
                run_phase(mode, key_type, kind, size, args, certdir)
                for _ in range(args.repeat)
                for mode in modes
            ]
            for mode in modes:
                mine = [r for r in runs if r["mode"] == mode]
                best = min(mine, key=lambda r: r["server_us_per_op"])
                rows.append(best | {"ops_per_s": max(r["ops_per_s"] for r in mine)})
    base = {(r["kind"], r["size"], r["key"]): r for r in rows if r["mode"] == "plain"}
    print(f"{'test':<26}{'mode':<11}{'ops/s':>10}{'server µs/op':>14}{'x plain µs':>12}")
    for r in rows:
        test = f"echo {r['size']} B" if r["kind"] == "echo" else f"handshake ({r['key'].upper()})"
        plain = base.get((r["kind"], r["size"], r["key"]))
        ratio = r["server_us_per_op"] / plain["server_us_per_op"] if plain else float("nan")
        print(
            f"{test:<26}{r['mode']:<11}{r['ops_per_s']:>10.0f}{r['server_us_per_op']:>14.1f}{ratio:>12.2f}"
            + (f"  errors: {r['errors']}" if r["errors"] else "")
        )


if __name__ == "__main__":
    main()
