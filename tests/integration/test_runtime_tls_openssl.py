"""wsserver.runtime.tls against the openssl CLI over loopback (TLS 1.3 key updates)."""

from __future__ import annotations

import shutil
import subprocess

import gevent
import pytest
from gevent import socket as gsocket

from tests.unit.test_runtime_tls import ca, server_context  # noqa: F401 - fixtures
from wsserver.runtime.tls import TLSSocket, make_transport
from wsserver.runtime.transport import WantRead, WantWrite

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_transport_survives_tls13_key_updates(server_context, ca, tmp_path):  # noqa: F811
    """openssl s_client's "K": a KeyUpdate that asks for ours in return, so the server's
    SSL_read has to write. Data flows both ways, with the new keys, afterwards."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    listener = gsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-tls1_3",
            "-servername",
            "server.test",
            "-CAfile",
            str(tmp_path / "ca.pem"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        sock, _ = listener.accept()
        server = TLSSocket(sock, server_context, ("127.0.0.1", 1), "unit")
        server.settimeout(10)
        server.do_handshake()
        transport = make_transport(server)

        def read_until(expected: bytes) -> bytes:
            got = b""
            for _ in range(500):
                try:
                    got += transport.recv(65536)
                except (WantRead, WantWrite):
                    gevent.sleep(0.01)
                if got == expected:
                    break
            return got

        proc.stdin.write(b"one\n")
        proc.stdin.flush()
        assert read_until(b"one\n") == b"one\n"
        for line in (b"K\n", b"two\n", b"k\n", b"three\n"):
            proc.stdin.write(line)
            proc.stdin.flush()
            gevent.sleep(0.05)
        assert read_until(b"two\nthree\n") == b"two\nthree\n"
        assert transport.send(b"back\n") == 5
        lines = []
        while b"back\n" not in lines and len(lines) < 200:  # s_client's report comes first
            lines.append(proc.stdout.readline())
        assert b"back\n" in lines  # s_client decrypted it with the updated keys
        transport.close()
        proc.stdin.close()
        assert proc.stderr.read().count(b"KEYUPDATE") == 2  # both updates really happened
    finally:
        proc.kill()
        proc.wait()
        listener.close()
