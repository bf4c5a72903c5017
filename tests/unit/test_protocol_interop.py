"""A real client — python-websockets' sans-IO ClientProtocol — talks to our layer through bytes."""

from __future__ import annotations

import os

import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Opcode as WsOpcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from wsserver.protocol import (
    BinaryMessage,
    CloseReceived,
    Handshake,
    Ping,
    ProtocolState,
    TextMessage,
    WebSocketProtocol,
)


def connect(client: ClientProtocol, **accept) -> tuple[WebSocketProtocol, Response]:
    client.send_request(client.connect())
    hs = Handshake()
    hs.receive_data(b"".join(client.data_to_send()))
    request = hs.next_request()
    assert request is not None
    response, proto = hs.accept(request, **accept)
    client.receive_data(response)
    [event] = client.events_received()
    assert isinstance(event, Response) and event.status_code == 101
    assert client.state is State.OPEN, client.handshake_exc
    return proto, event


def to_server(client: ClientProtocol, proto: WebSocketProtocol) -> list:
    proto.receive_data(b"".join(client.data_to_send()))
    return proto.events()


def to_client(proto: WebSocketProtocol, client: ClientProtocol) -> list:
    client.receive_data(proto.data_to_send())
    return client.events_received()


def echo(client: ClientProtocol, proto: WebSocketProtocol) -> list:
    """Server echoes every message it got; returns what the client receives."""
    for event in to_server(client, proto):
        if isinstance(event, TextMessage):
            proto.send_text(event.data)
        elif isinstance(event, BinaryMessage):
            proto.send_binary(event.data)
    return to_client(proto, client)


MESSAGES = ["hello", "é€𝄞" * 1000, "", "x" * 70000]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "wsproto"])
@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
def test_echo_roundtrip(fast, compression):
    extensions = [ClientPerMessageDeflateFactory()] if compression else None
    client = ClientProtocol(parse_uri("ws://example.com/echo"), extensions=extensions, max_size=2**20)
    proto, response = connect(client, compression=compression, fast_path=fast)
    assert proto.compression is compression
    assert ("permessage-deflate" in response.headers.get("Sec-WebSocket-Extensions", "")) is compression
    assert len(client.extensions) == int(compression)

    for text in MESSAGES:
        client.send_text(text.encode())
        [reply] = echo(client, proto)
        assert reply.opcode is WsOpcode.TEXT and reply.data.decode() == text
    payload = os.urandom(100_000)
    client.send_binary(payload)
    [reply] = echo(client, proto)
    assert reply.opcode is WsOpcode.BINARY and reply.data == payload

    # Fragmented, with a ping in between.
    client.send_text(b"frag", fin=False)
    client.send_ping(b"are you there")
    client.send_continuation(b"mented", fin=True)
    events = to_server(client, proto)
    assert events == [Ping(b"are you there"), TextMessage("fragmented")]
    [pong] = to_client(proto, client)
    assert pong.opcode is WsOpcode.PONG and pong.data == b"are you there"

    # Closing handshake started by the client.
    client.send_close(1000, "bye")
    assert to_server(client, proto) == [CloseReceived(1000, "bye")]
    assert proto.state is ProtocolState.CLOSED
    to_client(proto, client)
    assert client.state is State.CLOSING  # waits for the server to close TCP
    assert client.close_rcvd.code == 1000
    client.receive_eof()
    assert client.state is State.CLOSED and client.close_code == 1000


def test_server_initiated_close():
    client = ClientProtocol(parse_uri("ws://example.com/echo"))
    proto, _ = connect(client)
    proto.send_close(1001, "restarting")
    to_client(proto, client)
    assert client.close_rcvd.code == 1001 and client.close_rcvd.reason == "restarting"
    assert to_server(client, proto) == [CloseReceived(1001, "restarting")]
    assert proto.state is ProtocolState.CLOSED


@pytest.mark.parametrize(
    "factory",
    [
        ClientPerMessageDeflateFactory(client_max_window_bits=10, server_max_window_bits=11),
        ClientPerMessageDeflateFactory(client_no_context_takeover=True, server_no_context_takeover=True),
        ClientPerMessageDeflateFactory(client_max_window_bits=None),
        ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9),
    ],
    ids=["window-bits", "no-context-takeover", "no-client-bits", "smallest"],
)
def test_deflate_parameters_interoperate(factory):
    client = ClientProtocol(parse_uri("ws://example.com/echo"), extensions=[factory])
    proto, response = connect(client)
    assert proto.compression, response.headers
    for i in range(5):
        text = f"message {i} " + "repetitive text " * 200 + os.urandom(200).hex()
        client.send_text(text.encode())
        [reply] = echo(client, proto)
        assert reply.data.decode() == text


def test_server_max_window_bits_8_is_declined():
    client = ClientProtocol(
        parse_uri("ws://example.com/echo"),
        extensions=[ClientPerMessageDeflateFactory(server_max_window_bits=8)],
    )
    proto, response = connect(client)
    assert not proto.compression and "Sec-WebSocket-Extensions" not in response.headers
    client.send_text(b"still works")
    assert echo(client, proto)[0].data == b"still works"


def test_subprotocol_interop():
    client = ClientProtocol(parse_uri("ws://example.com/chat"), subprotocols=["v2.chat", "chat"])
    proto, _ = connect(client, subprotocol="chat")
    assert client.subprotocol == "chat" and proto.subprotocol == "chat"


def test_client_message_too_big_for_server():
    client = ClientProtocol(parse_uri("ws://example.com/echo"), extensions=[ClientPerMessageDeflateFactory()])
    proto, _ = connect(client, max_message_size=1000)
    client.send_text(b"a" * 1001)  # compresses to a few bytes: the limit counts inflated bytes
    assert to_server(client, proto) == [CloseReceived(1009, "message too big")]
    to_client(proto, client)
    assert client.close_rcvd.code == 1009
