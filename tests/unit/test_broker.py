"""wsserver.runtime.broker without Redis: the envelope, and the groups hooks it relies on."""

from __future__ import annotations

import pytest

from wsserver.runtime import envelope


def test_envelope_round_trips_text_and_binary():
    origin = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    text = envelope.encode_envelope(origin, "héllo")
    assert text == b"\x11" + origin + "héllo".encode()
    assert envelope.decode_envelope(text) == (origin, "héllo")
    data = envelope.encode_envelope(origin, b"\x00\xff")
    assert data == b"\x10" + origin + b"\x00\xff"
    assert envelope.decode_envelope(data) == (origin, b"\x00\xff")
    assert envelope.decode_envelope(envelope.encode_envelope(origin, "")) == (origin, "")
    assert envelope.decode_envelope(envelope.encode_envelope(origin, bytearray(b"x"))) == (origin, b"x")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x11short",
        b"\x21" + bytes(8) + b"x",
        b"\x13" + bytes(8) + b"x",
        b"\x11" + bytes(8) + b"\xff",
    ],
)
def test_bad_envelopes_are_refused(data):
    with pytest.raises(envelope.EnvelopeError):
        envelope.decode_envelope(data)


def test_channel_names():
    assert envelope.channel_of("kitchen") == "wsserver:group:kitchen"


def test_broker_unavailable_is_public():
    import wsserver

    assert wsserver.BrokerUnavailable is envelope.BrokerUnavailable


class _Session:
    id = "s"

    def __init__(self):
        self.sent = []

    def send_encoded(self, message, frame):
        self.sent.append(message)


def test_groups_membership_hooks_and_relay_first(groups):
    events = []
    groups.set_membership_hooks(lambda g: events.append(("first", g)), lambda g: events.append(("last", g)))
    a, b = _Session(), _Session()
    groups.join(a, "g")
    groups.join(b, "g")
    groups.leave(a, "g")
    assert events == [("first", "g")]
    groups.leave_all(b)
    assert events == [("first", "g"), ("last", "g")]
    assert groups.local_groups() == []

    groups.join(a, "g")

    def failing_relay(group, message):
        raise envelope.BrokerUnavailable("down")

    groups.set_relay(failing_relay)
    with pytest.raises(envelope.BrokerUnavailable):
        groups.publish("g", "x")
    assert a.sent == []  # the hook failed first: nobody got it
    groups.set_relay(lambda group, message: None)
    assert groups.publish("g", "y") == 1
    assert a.sent == ["y"]
