"""RADIUS adapter: PAP Access-Request (pyrad packets over our own UDP socket).

Access-Accept accepts, Access-Reject rejects (an Access-Challenge too: wsserver cannot answer
a challenge, and every server would ask the same). No valid answer within the request
time-out, or an ICMP port-unreachable (``ConnectionRefusedError`` on the connected socket),
is a failure of that server. Every request carries a Message-Authenticator (BlastRADIUS);
replies are checked against the request authenticator and, when present or required, their
Message-Authenticator. ``connection_timeout_ms`` does not apply (UDP has no connection).
"""

from __future__ import annotations

import io
import os
import socket
import time
from urllib.parse import urlsplit

from pyrad import packet
from pyrad.dictionary import Dictionary

from wsserver.adapters.balancer import Outcome, Timeouts
from wsserver.config.adapter_settings import AdapterSettings
from wsserver.protocol.address import format_address

MAX_DATAGRAMS = 64  # stray datagrams read per request at most
MAX_SECRET_BYTES = 4096

# RFC 2865 attributes (numbers from FreeRADIUS' dictionary.rfc2865) and RFC 2869's
# Message-Authenticator. Vendor attributes come from radius.dictionary.
DICTIONARY = """\
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE NAS-Port 5 integer
ATTRIBUTE Service-Type 6 integer
ATTRIBUTE Framed-Protocol 7 integer
ATTRIBUTE Filter-Id 11 string
ATTRIBUTE Reply-Message 18 string
ATTRIBUTE State 24 octets
ATTRIBUTE Class 25 octets
ATTRIBUTE Session-Timeout 27 integer
ATTRIBUTE Called-Station-Id 30 string
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Proxy-State 33 octets
ATTRIBUTE NAS-Port-Type 61 integer
ATTRIBUTE Message-Authenticator 80 octets
VALUE Service-Type Login-User 1
VALUE Service-Type Framed-User 2
VALUE Service-Type Authenticate-Only 8
VALUE NAS-Port-Type Virtual 5
"""


def load_dictionary(extra: str = "") -> Dictionary:
    dictionary = Dictionary(io.StringIO(DICTIONARY))
    if extra:
        dictionary.ReadDictionary(extra)
    return dictionary


def read_secret(settings: AdapterSettings) -> bytes:
    o = settings.radius
    assert o is not None  # parse_adapter() fills in the table of the adapter's type
    if o.secret_file:
        with open(o.secret_file, "rb") as f:
            secret = f.read(MAX_SECRET_BYTES + 1).strip()
    else:
        secret = os.environ.get(o.secret_env, "").encode()
    if not secret:
        raise ValueError(f"adapter {settings.name}: the RADIUS shared secret is empty")
    return secret


class RadiusBackend:
    def __init__(
        self, settings: AdapterSettings, secret: bytes | None = None, dictionary: Dictionary | None = None
    ) -> None:
        self.settings = settings
        assert settings.radius is not None  # parse_adapter() fills in the table of the adapter's type
        self.options = settings.radius
        self.secret = secret if secret is not None else read_secret(settings)
        self.dictionary = dictionary or load_dictionary(self.options.dictionary)
        for name in self.options.attributes:
            if name not in self.dictionary.attributes:
                raise ValueError(
                    f"adapter {settings.name}: radius.attributes: {name!r} is not in the dictionary"
                )

    def precheck(self, username: str, password: str) -> str:
        if len(username.encode()) > 253:
            return "user name longer than 253 bytes"
        if len(password.encode()) > 128:
            return "password longer than 128 bytes (RADIUS PAP limit)"
        return ""

    def build(self, username: str, password: str, state: bytes = b"") -> packet.AuthPacket:
        request = packet.AuthPacket(code=packet.AccessRequest, secret=self.secret, dict=self.dictionary)
        request.add_message_authenticator()
        request["User-Name"] = username
        request["User-Password"] = request.PwCrypt(password)
        if self.options.nas_identifier:
            request["NAS-Identifier"] = self.options.nas_identifier
        if self.options.nas_ip_address:
            request["NAS-IP-Address"] = self.options.nas_ip_address
        for name, value in self.options.attributes.items():
            request[name] = value
        if state:  # the answer to an Access-Challenge carries its State back (RFC 2865 5.24)
            request["State"] = state
        return request

    def authenticate(
        self, server_url: str, username: str, password: str, timeout: Timeouts, state: bytes = b""
    ) -> Outcome:
        parts = urlsplit(server_url)
        host, port = parts.hostname or "", parts.port or 1812
        request = self.build(username, password, state)
        raw = request.RequestPacket()
        deadline = time.monotonic() + timeout.request
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        except OSError as exc:
            return Outcome.failed(f"cannot resolve {host}: {exc}", "connect")
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect((host, port))
            sock.settimeout(timeout.request)
            sock.send(raw)
            for _ in range(MAX_DATAGRAMS):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                data = sock.recv(4096)
                try:
                    reply = packet.Packet(packet=data, secret=self.secret, dict=self.dictionary)
                except packet.PacketError:
                    continue
                if not request.VerifyReply(
                    reply, data, enforce_ma=self.options.require_message_authenticator
                ):
                    continue  # not ours, or forged: keep waiting for the real answer
                return self._classify(reply)
        except TimeoutError:
            pass
        except ConnectionRefusedError:
            return Outcome.failed(f"{format_address(host, port)}: port unreachable", "connect")
        except OSError as exc:
            return Outcome.failed(f"{format_address(host, port)}: {exc.strerror or exc}", "connect")
        finally:
            sock.close()
        return Outcome.failed(f"no answer within {timeout.request:.3f}s", "timeout")

    def _classify(self, reply: packet.Packet) -> Outcome:
        try:
            message = "; ".join(str(m) for m in reply["Reply-Message"])[:200]
        except KeyError:
            message = ""
        if reply.code == packet.AccessAccept:
            return Outcome.accepted("Access-Accept", user="", reply_message=message)
        if reply.code == packet.AccessReject:
            return Outcome.rejected("Access-Reject", reply_message=message)
        if reply.code == packet.AccessChallenge:
            # A password adapter cannot answer it; the OTP adapter (adapters/otp.py) answers with
            # the one-time code and this State.
            try:
                state = bytes(reply["State"][0])
            except (KeyError, IndexError):
                state = b""
            return Outcome.rejected(
                "Access-Challenge (challenges are not supported)",
                challenge_state=state,
                reply_message=message,
            )
        return Outcome.failed(f"unexpected RADIUS code {reply.code}", "protocol")
