"""The closing handshake's table, the close codes and the one door to wsproto's internals."""

from __future__ import annotations

import ast
import importlib.util
import itertools
from pathlib import Path

import pytest
import wsproto
from wsproto.frame_protocol import CloseReason

import wsserver
import wsserver.protocol
from wsserver.protocol import CloseCode, CloseReceived, ProtocolState, WebSocketProtocol, _wsproto_compat
from wsserver.protocol.connection import _TRANSITIONS, IllegalTransition, _Happening, _Phase

from .test_protocol_frames import TEXT, close_frame, frame

# -- the transition table ----------------------------------------------------------------------

# Written out again on purpose: a pair added to or dropped from the table must be a decision.
LEGAL = {
    ("OPEN", "SEND_CLOSE"): "CLOSE_SENT",
    ("OPEN", "RECEIVE_CLOSE"): "CLOSED",
    ("OPEN", "FAIL"): "FAILED",
    ("OPEN", "EOF"): "DROPPED",
    ("CLOSE_SENT", "SEND_CLOSE"): "CLOSE_SENT",
    ("CLOSE_SENT", "RECEIVE_CLOSE"): "CLOSED",
    ("CLOSE_SENT", "FAIL"): "FAILED",
    ("CLOSE_SENT", "EOF"): "CLOSED",
    ("FAILED", "SEND_CLOSE"): "FAILED",
    ("FAILED", "EOF"): "FAILED_CLOSED",
    ("CLOSED", "SEND_CLOSE"): "CLOSED",
    ("CLOSED", "EOF"): "CLOSED",
    ("FAILED_CLOSED", "SEND_CLOSE"): "FAILED_CLOSED",
    ("FAILED_CLOSED", "EOF"): "FAILED_CLOSED",
    ("DROPPED", "SEND_CLOSE"): "CLOSED",
    ("DROPPED", "EOF"): "DROPPED",
}


def test_every_legal_pair_is_listed_and_nothing_else():
    table = {(phase.name, happening.name): new.name for (phase, happening), new in _TRANSITIONS.items()}
    assert table == LEGAL


def test_every_pair_is_legal_or_unparseable_input():
    """The only unlisted pairs are a peer's close or a failure once input is no longer parsed."""
    for phase, happening in itertools.product(_Phase, _Happening):
        if (phase, happening) not in _TRANSITIONS:
            assert phase.input_done and happening in (_Happening.RECEIVE_CLOSE, _Happening.FAIL)


def test_every_phase_is_reachable_and_closed_ones_stay_closed():
    reached = {_Phase.OPEN}
    while True:
        more = {new for (phase, _), new in _TRANSITIONS.items() if phase in reached} - reached
        if not more:
            break
        reached |= more
    assert reached == set(_Phase)
    for (phase, _), new in _TRANSITIONS.items():
        # Facts only ever become true: nothing is unsent, unread or unfailed.
        assert new.close_sent >= phase.close_sent
        assert new.input_done >= phase.input_done
        assert new.failed >= phase.failed
        if phase.state is ProtocolState.CLOSED:
            assert new.state is ProtocolState.CLOSED


@pytest.mark.parametrize(
    ("setup", "illegal"),
    [
        (lambda p: p.receive_data(close_frame(1000)), lambda p: p._fail(1002, "late")),
        (lambda p: p.receive_data(frame(TEXT, b"\xff")), lambda p: p._receive_close(1000, "")),
        (lambda p: p.receive_data(b""), lambda p: p._fail(1007, "after EOF")),
    ],
    ids=["fail-after-peer-close", "peer-close-after-failure", "fail-after-eof"],
)
def test_an_illegal_pair_raises_before_any_side_effect(setup, illegal):
    proto = WebSocketProtocol()
    setup(proto)
    events, phase, code = proto.events(), proto._phase, proto.close_code
    proto.data_to_send()
    with pytest.raises(IllegalTransition):
        illegal(proto)
    assert (proto.events(), proto.data_to_send(), proto._phase, proto.close_code) == ([], b"", phase, code)
    assert events and isinstance(events[-1], CloseReceived)


ACTIONS = {
    "send_close": lambda p: p.send_close(1001),
    "peer_close": lambda p: p.receive_data(close_frame(1000, "bye")),
    "bad_utf8": lambda p: p.receive_data(frame(TEXT, b"\xff")),
    "message": lambda p: p.receive_data(frame(TEXT, "hi")),
    "eof": lambda p: p.receive_data(b""),
}


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "wsproto"])
def test_the_flags_are_the_phase_facts_after_any_sequence(fast):
    for sequence in itertools.product(ACTIONS, repeat=4):
        proto = WebSocketProtocol(fast_path=fast)
        reports = 0
        for action in sequence:
            ACTIONS[action](proto)
            phase = proto._phase
            assert proto.state is phase.state
            assert proto._close_sent is phase.close_sent
            assert proto._input_done is phase.input_done
            assert proto.failed is phase.failed and proto._failed is phase.failed
            if phase.input_done:
                assert not proto._fast_ready
            reports += sum(type(e) is CloseReceived for e in proto.events())
            proto.data_to_send()
        assert reports == (1 if proto._phase.input_done else 0), sequence


# -- close codes ------------------------------------------------------------------------------


def test_close_codes_are_ours_and_exported():
    assert wsserver.CloseCode is CloseCode is wsserver.protocol.CloseCode
    assert "CloseCode" in wsserver.__all__
    assert CloseCode.NORMAL == 1000 and CloseCode.GOING_AWAY == 1001
    assert CloseCode.PROTOCOL_ERROR == 1002 and CloseCode.UNSUPPORTED_DATA == 1003
    assert CloseCode.INVALID_DATA == 1007 and CloseCode.POLICY_VIOLATION == 1008
    assert CloseCode.MESSAGE_TOO_BIG == 1009 and CloseCode.INTERNAL_ERROR == 1011
    assert CloseCode.TRY_AGAIN_LATER == 1013
    # wsproto's spellings still work, and every wsproto code has the same value here.
    assert CloseCode.INVALID_FRAME_PAYLOAD_DATA is CloseCode.INVALID_DATA
    for reason in CloseReason:
        assert CloseCode(reason.value) == reason


def test_a_named_code_goes_on_the_wire_as_its_number():
    proto = WebSocketProtocol()
    proto.send_close(CloseCode.GOING_AWAY, "bye")
    assert proto.data_to_send() == b"\x88\x05\x03\xe9bye"
    proto = WebSocketProtocol()
    proto.send_close(CloseCode.NO_STATUS_RCVD)  # as with wsproto's own enum: no code at all
    assert proto.data_to_send() == b"\x88\x00"


def test_server_code_has_no_bare_close_numbers():
    """Every close the server starts names its code (``session.close(1001, ...)`` is refused)."""
    root = Path(wsserver.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("close", "send_close")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, int)
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []


# -- wsproto's internals --------------------------------------------------------------------------

PRIVATE_ATTRIBUTES = {
    "_frame_decoder",
    "_message_decoder",
    "_process_close",
    "_compressor",
    "_decompressor",
    "_inbound_compressed",
    "_inbound_is_compressible",
    "_client_max_window_bits",
    "_enabled",
}


def test_wsproto_internals_are_used_in_one_module_only():
    root = Path(wsserver.__file__).parent
    compat = Path(_wsproto_compat.__file__)
    for path in sorted(root.rglob("*.py")):
        if path == compat:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wsproto"):
                assert not [a.name for a in node.names if a.name.startswith("_")], path
            if isinstance(node, ast.Attribute):
                assert node.attr not in PRIVATE_ATTRIBUTES, f"{path}:{node.lineno} {node.attr}"


def test_the_installed_wsproto_is_supported_and_setup_cfg_says_the_same_range():
    _wsproto_compat.check_version(wsproto.__version__)
    (lo_major, lo_minor), (hi_major, hi_minor) = _wsproto_compat.SUPPORTED
    setup_cfg = (Path(wsserver.__file__).parent.parent / "setup.cfg").read_text()
    assert f"wsproto>={lo_major}.{lo_minor},<{hi_major}.{hi_minor}\n" in setup_cfg


@pytest.mark.parametrize("version", ["1.4.0", "2.0.0", "1.1.0", "0.14", "unknown"])
def test_an_unsupported_wsproto_is_refused(version):
    with pytest.raises(ImportError, match=r"wsproto>=1\.2,<1\.4.*" + version.replace(".", r"\.")):
        _wsproto_compat.check_version(version)


def test_importing_with_an_unsupported_wsproto_fails_clearly(monkeypatch):
    # Executes a fresh copy of the module (the loaded one, and everything built on it, stay).
    monkeypatch.setattr(wsproto, "__version__", "1.4.0")
    spec = importlib.util.spec_from_file_location("_wsproto_compat_copy", _wsproto_compat.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError, match=r"needs wsproto>=1\.2,<1\.4 .*wsproto 1\.4\.0 is installed"):
        spec.loader.exec_module(module)
