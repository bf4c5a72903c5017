"""wsserver.runtime.tls on a gevent socketpair: the blocking-style TLSSocket of the handshake
phase, and the non-blocking TLSTransport the session reads in hub callbacks."""

from __future__ import annotations

import ssl

import gevent
import pytest
import trustme
from gevent import socket as gsocket
from gevent import ssl as gssl

from tests.support.tlsstores import issue
from wsserver.runtime.tls import TLSError, TLSSocket, TLSTransport, make_transport
from wsserver.runtime.transport import PlainTransport, WantRead
from wsserver.security.keystores import KeyEntry
from wsserver.security.tls import build_server_context


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca):
    leaf = issue(ca, "server")
    return build_server_context(KeyEntry("server", leaf.key, leaf.cert, leaf.chain[1:]))


def pair(server_context, ca, cert=None):
    a, b = gsocket.socketpair()
    server = TLSSocket(a, server_context, ("127.0.0.1", 1234), "unit")
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    client = ctx.wrap_socket(b, server_hostname="server.test", do_handshake_on_connect=False)
    return server, client


def test_handshake_on_first_recv_and_data(server_context, ca):
    server, client = pair(server_context, ca)
    server.settimeout(5)
    client.settimeout(5)

    def talk():
        client.do_handshake()
        client.sendall(b"hello")
        return client.recv(100)

    glet = gevent.spawn(talk)
    assert server.recv(100) == b"hello"  # the TLS handshake ran inside this recv
    assert server.established and server.version() == "TLSv1.3"
    server.sendall(b"world")
    assert glet.get(timeout=5) == b"world"
    big = bytes(range(256)) * 4000  # 1 MB: many records, partial writes
    reader = gevent.spawn(lambda: b"".join(iter(lambda: client.recv(65536), b""))[: len(big)])
    server.sendall(big)
    server.close()
    assert reader.get(timeout=10) == big  # and close_notify ended the stream


def test_silent_client_times_out(server_context, ca):
    server, client = pair(server_context, ca)
    server.settimeout(0.2)
    with pytest.raises(TimeoutError):
        server.do_handshake()
    client.close()
    server.close()


def test_handshake_failure_is_an_oserror(server_context):
    a, b = gsocket.socketpair()
    server = TLSSocket(a, server_context, ("127.0.0.1", 1234), "unit")
    b.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to a TLS port
    server.settimeout(5)
    with pytest.raises(TLSError) as info:
        server.recv(100)
    assert isinstance(info.value, OSError) and info.value.during_handshake
    assert "http request" in info.value.reason
    assert b.recv(1000).startswith(b"HTTP/1.1 400 Bad Request\r\n")  # readable, like nginx's answer
    server.close()
    b.close()
    with pytest.raises(OSError):
        server.recv(1)  # closed: the fd number is never touched again


def test_transport_is_non_blocking(server_context, ca):
    server, client = pair(server_context, ca)
    server.settimeout(5)
    glet = gevent.spawn(client.do_handshake)
    server.do_handshake()
    glet.get(timeout=5)
    transport = make_transport(server)
    assert isinstance(transport, TLSTransport)
    with pytest.raises(WantRead):
        transport.recv(65536)
    payload = b"z" * 50_000  # four records
    client.sendall(payload)
    got = b""
    for _ in range(100):
        gevent.sleep(0.01)
        try:
            got += transport.recv(65536)
        except WantRead:
            pass
        if len(got) == len(payload):
            break
    assert got == payload
    sent = transport.send(b"back")
    assert sent == 4 and client.recv(10) == b"back"
    assert transport.peer_certificate() is None
    transport.close()
    transport.close()  # idempotent
    with pytest.raises(OSError):
        transport.recv(1)
    assert client.recv(10) == b""  # close_notify


def test_plain_sockets_get_the_plain_transport():
    a, b = gsocket.socketpair()
    transport = make_transport(a)
    assert isinstance(transport, PlainTransport)
    transport.close()
    b.close()
