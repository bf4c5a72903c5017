"""The session's TLS transport in isolation: server CPU per 32 B request/response round trip.

One connection over loopback TCP. The server (a subprocess, optionally under callgrind) does the
TLS handshake with ``wsserver.runtime.tls.TLSSocket`` and then runs the same loop the session
runs in its hub callbacks, minus WebSocket: wait for readability (``select.poll``),
``transport.recv(65536)``, ``transport.send(data)``. The client (this process, stdlib ``ssl``,
blocking) sends ``--size`` bytes and waits for the echo, ``--n`` times.

Server modes:
  transport  wsserver.runtime.tls.TLSTransport (what the session uses for wss)
  pyopenssl  pyOpenSSL ``Connection.recv``/``send`` with its exceptions (the old transport's core)
  sslobject  stdlib ``ssl.SSLObject`` + ``MemoryBIO`` driven like asyncio's SSL protocol (aiohttp)
  plain      wsserver.runtime.transport.PlainTransport (no TLS)

Figures per round trip: server CPU (``time.process_time``, includes poll), the time spent inside
recv+send (``thread_time`` around the two calls), and with ``--callgrind`` the server's
instruction count (two runs of different length, differenced; immune to other load on the host,
but it counts user space only: syscalls show up in the µs figures, not in Ir).

    .venv/bin/python bench/tls_transport_micro.py [--modes transport,sslobject] [--n 20000]
    .venv/bin/python bench/tls_transport_micro.py --callgrind [--n 2000] [--size 65536]

Experiments (environment of the run): ``BENCH_TLS_MODULE=/path/to/old/tls.py`` measures another
version of ``wsserver/runtime/tls.py`` (e.g. ``git show HEAD:wsserver/runtime/tls.py``);
``BENCH_RELEASE_BUFFERS=1`` sets ``SSL_MODE_RELEASE_BUFFERS`` on the server context.

Measured (callgrind, Ir per 32 B round trip, bench loop and poll included; ``plain`` 10.9k):
pyOpenSSL ``Connection.recv``/``send`` as the transport used them 61.4k; the transport calling
``SSL_read``/``SSL_write`` directly 24.2k (with SSL_MODE_RELEASE_BUFFERS +2.3k); stdlib
SSLObject+MemoryBIO as asyncio drives it 52.1k. Wall-clock figures on a shared 2-core VM vary by
+-30 %: compare only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("transport", "pyopenssl", "sslobject", "plain")
RECV_SIZE = 65536  # wsserver.runtime.session.RECV_SIZE


# --- server role ----------------------------------------------------------------------------


def _wsserver_context(certdir: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from wsserver.security.keystores import KeyEntry
    from wsserver.security.tls import build_server_context

    certs = x509.load_pem_x509_certificates(Path(certdir, "ec.crt").read_bytes())
    key = serialization.load_pem_private_key(Path(certdir, "ec.key").read_bytes(), None)
    ctx = build_server_context(KeyEntry("bench", key, certs[0], tuple(certs[1:])))  # type: ignore[arg-type]
    if os.environ.get("BENCH_RELEASE_BUFFERS"):  # experiment: SSL_MODE_RELEASE_BUFFERS
        from OpenSSL import SSL

        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    return ctx


class _PyOpenSSLRaw:
    """pyOpenSSL's Connection.recv/send, exceptions and all (the pre-optimisation core)."""

    def __init__(self, conn, sock) -> None:
        self.conn, self.sock = conn, sock

    def recv(self, size: int) -> bytes:
        from OpenSSL import SSL

        from wsserver.runtime.transport import WantRead

        try:
            return self.conn.recv(size)
        except SSL.WantReadError:
            raise WantRead from None

    def send(self, data) -> int:
        return self.conn.send(data)


class _SSLObjectTransport:
    """stdlib SSLObject over memory BIOs, the way asyncio's sslproto drives it."""

    def __init__(self, sock: socket.socket, certdir: str) -> None:
        self.sock = sock
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        ctx.load_cert_chain(os.path.join(certdir, "ec.crt"), os.path.join(certdir, "ec.key"))
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        sock.setblocking(True)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self.incoming.write(sock.recv(65536))
        self._flush()
        sock.setblocking(False)
        self.early = b""  # application data that came in with the client's Finished
        try:
            self.early = self.obj.read(65536)
        except ssl.SSLWantReadError:
            pass

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out:
            self.sock.sendall(out)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, size: int) -> bytes:
        from wsserver.runtime.transport import WantRead

        if self.early:
            data, self.early = self.early, b""
            return data
        try:
            data = self.sock.recv(262144)  # asyncio's sslproto reads 256 KiB
        except BlockingIOError:
            raise WantRead from None
        self.incoming.write(data)
        chunks = []
        try:
            while True:
                chunk = self.obj.read(size)
                if not chunk:
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        self._flush()  # post-handshake messages
        if not chunks:
            raise WantRead
        return b"".join(chunks)

    def send(self, data) -> int:
        n = self.obj.write(data)
        self.sock.send(self.outgoing.read())  # the bench's messages always fit the socket buffer
        return n


def serve(mode: str, certdir: str, n: int, size: int) -> None:
    from gevent import socket as gsocket

    from wsserver.runtime.tls import TLSSocket, make_transport

    if os.environ.get("BENCH_TLS_MODULE"):  # compare another version of wsserver/runtime/tls.py
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_tls", os.environ["BENCH_TLS_MODULE"])
        other = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(other)
        TLSSocket, make_transport = other.TLSSocket, other.make_transport
    from wsserver.runtime.transport import PlainTransport, WantRead, WantWrite

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    raw, _ = listener.accept()
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "sslobject":
        transport = _SSLObjectTransport(raw, certdir)
    else:
        gsock = gsocket.socket(fileno=raw.detach())
        if mode == "plain":
            transport = PlainTransport(gsock)
        else:
            tls = TLSSocket(gsock, _wsserver_context(certdir), ("127.0.0.1", 0), "bench")
            tls.settimeout(30)
            tls.do_handshake()
            transport = make_transport(tls)
            if mode == "pyopenssl":
                transport = _PyOpenSSLRaw(tls.connection, transport)
    fd = (
        raw.fileno()
        if mode == "sslobject"
        else (transport.sock if mode == "pyopenssl" else transport).fileno()
    )
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    perf = time.thread_time
    inside = 0.0
    done = 0  # bytes echoed
    cpu0 = time.process_time()
    while done < n * size:
        if not getattr(transport, "early", None):
            poller.poll()
        t0 = perf()
        try:
            data = transport.recv(RECV_SIZE)
        except WantRead:
            inside += perf() - t0
            continue
        if not data:
            break
        view = memoryview(data)
        while view:
            try:
                view = view[transport.send(view) :]
            except (WantWrite, WantRead):
                select.select([], [fd], [])
        inside += perf() - t0
        done += len(data)
    cpu = time.process_time() - cpu0
    print(json.dumps({"n": done // size, "cpu": cpu, "inside": inside}), flush=True)


# --- client / driver -----------------------------------------------------------------------


def make_certs(certdir: str) -> str:
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(os.path.join(certdir, "ca.pem"))
    leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.ECDSA)
    with open(os.path.join(certdir, "ec.crt"), "wb") as f:
        f.write(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(os.path.join(certdir, "ec.key"))
    return os.path.join(certdir, "ca.pem")


def run(mode: str, certdir: str, n: int, size: int, callgrind: str | None = None) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--serve",
        mode,
        "--certdir",
        certdir,
        "--n",
        str(n),
        "--size",
        str(size),
    ]
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}", *cmd]
    if not callgrind and (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]  # the server on core 0, this client on core 1
        os.sched_setaffinity(0, {1})
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(60 if callgrind else 10)
        if mode != "plain":
            ctx = ssl.create_default_context(cafile=os.path.join(certdir, "ca.pem"))
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        msg = os.urandom(size)
        for _ in range(n):
            sock.sendall(msg)
            got = 0
            while got < size:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                got += len(chunk)
        result = json.loads(server.stdout.readline())
        sock.close()
        _, err = server.communicate(timeout=120)
    except Exception:
        server.kill()
        sys.stderr.write(server.communicate()[1])
        raise
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    if callgrind:
        m = re.search(r"Collected : (\d+)", err)
        result["ir"] = int(m.group(1)) if m else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--n", type=int, default=None, help="round trips (20000; 2000 with --callgrind)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="wall-clock runs per mode; the best is kept")
    parser.add_argument("--callgrind", action="store_true", help="instruction counts under valgrind")
    parser.add_argument("--serve")
    parser.add_argument("--certdir")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.certdir, args.n, args.size)
        return
    n = args.n or (2000 if args.callgrind else 20000)
    with tempfile.TemporaryDirectory() as certdir:
        make_certs(certdir)
        print(f"{args.size} B round trips; {'callgrind Ir' if args.callgrind else f'best of {args.repeat}'}")
        print(
            f"{'mode':<11}{'server µs/rt':>13}{'recv+send µs':>14}"
            + (f"{'Ir/rt':>10}" if args.callgrind else "")
        )
        for mode in args.modes.split(","):
            if args.callgrind:
                if not shutil.which("valgrind"):
                    sys.exit("valgrind not found")
                short = run(mode, certdir, n // 4, args.size, os.path.join(certdir, "cg.short"))
                long_ = run(mode, certdir, n, args.size, os.path.join(certdir, "cg.long"))
                ir = (long_["ir"] - short["ir"]) / (long_["n"] - short["n"])
                print(
                    f"{mode:<11}{long_['cpu'] / long_['n'] * 1e6:>13.1f}{long_['inside'] / long_['n'] * 1e6:>14.1f}"
                    f"{ir:>10.0f}"
                )
            else:
                best = min(
                    (run(mode, certdir, n, args.size) for _ in range(args.repeat)), key=lambda r: r["cpu"]
                )
                print(
                    f"{mode:<11}{best['cpu'] / best['n'] * 1e6:>13.2f}{best['inside'] / best['n'] * 1e6:>14.2f}"
                )


if __name__ == "__main__":
    main()
