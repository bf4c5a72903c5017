"""``autobahn.websocket.compress``: the permessage-deflate (RFC 7692) negotiation classes and codec.

Same parameters and defaults as Autobahn's ``compress_deflate``: an offer announces
``client_no_context_takeover`` / ``client_max_window_bits`` support and may request
``server_no_context_takeover`` / ``server_max_window_bits=N``; the response is parsed into
:class:`PerMessageDeflateResponse`; :class:`PerMessageDeflate` then compresses with the client's
window and context takeover *as the server's response set them* (a ``client_no_context_takeover``
in the offer is only a hint) and decompresses with the server's.
"""

from __future__ import annotations

import zlib

__all__ = [
    "PERMESSAGE_COMPRESSION_EXTENSION",
    "PerMessageCompress",
    "PerMessageCompressOffer",
    "PerMessageCompressOfferAccept",
    "PerMessageCompressResponse",
    "PerMessageCompressResponseAccept",
    "PerMessageDeflate",
    "PerMessageDeflateMixin",
    "PerMessageDeflateOffer",
    "PerMessageDeflateOfferAccept",
    "PerMessageDeflateResponse",
    "PerMessageDeflateResponseAccept",
]

WINDOW_BITS = (8, 9, 10, 11, 12, 13, 14, 15)
MEM_LEVELS = (1, 2, 3, 4, 5, 6, 7, 8, 9)


class PerMessageCompressOffer:
    pass


class PerMessageCompressOfferAccept:
    pass


class PerMessageCompressResponse:
    pass


class PerMessageCompressResponseAccept:
    pass


class PerMessageCompress:
    pass


class PerMessageDeflateMixin:
    EXTENSION_NAME = "permessage-deflate"
    WINDOW_SIZE_PERMISSIBLE_VALUES = list(WINDOW_BITS)
    MEM_LEVEL_PERMISSIBLE_VALUES = list(MEM_LEVELS)


def _flag(name: str, values: list) -> bool:
    if len(values) != 1 or values[0] is not True:
        raise ValueError(f"illegal value {values!r} for permessage-deflate parameter {name!r}")
    return True


def _bits(name: str, values: list) -> int:
    if len(values) != 1:
        raise ValueError(f"multiple occurrence of permessage-deflate parameter {name!r}")
    try:
        bits = int(values[0])
    except (TypeError, ValueError):
        raise ValueError(f"illegal value {values[0]!r} for permessage-deflate parameter {name!r}") from None
    if bits not in WINDOW_BITS:
        raise ValueError(f"illegal value {bits} for permessage-deflate parameter {name!r}")
    return bits


class PerMessageDeflateOffer(PerMessageCompressOffer, PerMessageDeflateMixin):
    """What a client offers."""

    def __init__(
        self,
        acceptNoContextTakeover=True,
        acceptMaxWindowBits=True,
        requestNoContextTakeover=False,
        requestMaxWindowBits=0,
    ):
        for value in (acceptNoContextTakeover, acceptMaxWindowBits, requestNoContextTakeover):
            if type(value) is not bool:
                raise TypeError(f"invalid type {type(value)} for a permessage-deflate flag")
        if requestMaxWindowBits != 0 and requestMaxWindowBits not in WINDOW_BITS:
            raise ValueError(f"invalid value {requestMaxWindowBits} for requestMaxWindowBits")
        self.acceptNoContextTakeover = acceptNoContextTakeover
        self.acceptMaxWindowBits = acceptMaxWindowBits
        self.requestNoContextTakeover = requestNoContextTakeover
        self.requestMaxWindowBits = requestMaxWindowBits

    @classmethod
    def parse(cls, params: dict) -> PerMessageDeflateOffer:
        accept_max = False
        request_nct = False
        request_max = 0
        for name, values in params.items():
            if name == "client_max_window_bits":
                accept_max = _flag(name, values)
            elif name == "client_no_context_takeover":
                _flag(name, values)
            elif name == "server_max_window_bits":
                request_max = _bits(name, values)
            elif name == "server_no_context_takeover":
                request_nct = _flag(name, values)
            else:
                raise ValueError(f"illegal permessage-deflate parameter {name!r}")
        return cls(True, accept_max, request_nct, request_max)

    def getExtensionString(self) -> str:
        parts = [self.EXTENSION_NAME]
        if self.acceptNoContextTakeover:
            parts.append("client_no_context_takeover")
        if self.acceptMaxWindowBits:
            parts.append("client_max_window_bits")
        if self.requestNoContextTakeover:
            parts.append("server_no_context_takeover")
        if self.requestMaxWindowBits:
            parts.append(f"server_max_window_bits={self.requestMaxWindowBits}")
        return "; ".join(parts)

    def __json__(self) -> dict:
        return {
            "extension": self.EXTENSION_NAME,
            "acceptNoContextTakeover": self.acceptNoContextTakeover,
            "acceptMaxWindowBits": self.acceptMaxWindowBits,
            "requestNoContextTakeover": self.requestNoContextTakeover,
            "requestMaxWindowBits": self.requestMaxWindowBits,
        }

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflateOffer(acceptNoContextTakeover={self.acceptNoContextTakeover}, "
            f"acceptMaxWindowBits={self.acceptMaxWindowBits}, "
            f"requestNoContextTakeover={self.requestNoContextTakeover}, "
            f"requestMaxWindowBits={self.requestMaxWindowBits})"
        )


class PerMessageDeflateOfferAccept(PerMessageCompressOfferAccept, PerMessageDeflateMixin):
    """How a server accepts an offer (server side; the cases define acceptors with it)."""

    def __init__(
        self,
        offer,
        requestNoContextTakeover=False,
        requestMaxWindowBits=0,
        noContextTakeover=None,
        windowBits=None,
        memLevel=None,
    ):
        if not isinstance(offer, PerMessageDeflateOffer):
            raise TypeError(f"invalid type {type(offer)} for offer")
        if requestNoContextTakeover and not offer.acceptNoContextTakeover:
            raise ValueError("requestNoContextTakeover: feature unsupported by client")
        if requestMaxWindowBits and (
            requestMaxWindowBits not in WINDOW_BITS or not offer.acceptMaxWindowBits
        ):
            raise ValueError(f"invalid requestMaxWindowBits {requestMaxWindowBits}")
        self.offer = offer
        self.requestNoContextTakeover = requestNoContextTakeover
        self.requestMaxWindowBits = requestMaxWindowBits
        self.noContextTakeover = noContextTakeover
        self.windowBits = windowBits
        self.memLevel = memLevel

    def getExtensionString(self) -> str:
        parts = [self.EXTENSION_NAME]
        if self.offer.requestNoContextTakeover:
            parts.append("server_no_context_takeover")
        if self.offer.requestMaxWindowBits:
            parts.append(f"server_max_window_bits={self.offer.requestMaxWindowBits}")
        if self.requestNoContextTakeover:
            parts.append("client_no_context_takeover")
        if self.requestMaxWindowBits:
            parts.append(f"client_max_window_bits={self.requestMaxWindowBits}")
        return "; ".join(parts)


class PerMessageDeflateResponse(PerMessageCompressResponse, PerMessageDeflateMixin):
    """What a server answered."""

    def __init__(
        self,
        client_max_window_bits,
        client_no_context_takeover,
        server_max_window_bits,
        server_no_context_takeover,
    ):
        self.client_max_window_bits = client_max_window_bits
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.server_no_context_takeover = server_no_context_takeover

    @classmethod
    def parse(cls, params: dict) -> PerMessageDeflateResponse:
        client_max = 0
        client_nct = False
        server_max = 0
        server_nct = False
        for name, values in params.items():
            if len(values) > 1:
                raise ValueError(f"multiple occurrence of permessage-deflate parameter {name!r}")
            if name == "client_max_window_bits":
                client_max = _bits(name, values)
            elif name == "client_no_context_takeover":
                client_nct = _flag(name, values)
            elif name == "server_max_window_bits":
                server_max = _bits(name, values)
            elif name == "server_no_context_takeover":
                server_nct = _flag(name, values)
            else:
                raise ValueError(f"illegal permessage-deflate parameter {name!r}")
        return cls(client_max, client_nct, server_max, server_nct)

    def __json__(self) -> dict:
        return {
            "extension": self.EXTENSION_NAME,
            "client_max_window_bits": self.client_max_window_bits,
            "client_no_context_takeover": self.client_no_context_takeover,
            "server_max_window_bits": self.server_max_window_bits,
            "server_no_context_takeover": self.server_no_context_takeover,
        }

    def __repr__(self) -> str:
        return f"PerMessageDeflateResponse({self.__json__()!r})"


class PerMessageDeflateResponseAccept(PerMessageCompressResponseAccept, PerMessageDeflateMixin):
    """How a client accepts the server's response."""

    def __init__(self, response, noContextTakeover=None, windowBits=None, memLevel=None):
        if not isinstance(response, PerMessageDeflateResponse):
            raise TypeError(f"invalid type {type(response)} for response")
        if noContextTakeover is not None and response.client_no_context_takeover and not noContextTakeover:
            raise ValueError("noContextTakeover: the server requested it")
        if windowBits is not None and (
            windowBits not in WINDOW_BITS
            or (response.client_max_window_bits and windowBits > response.client_max_window_bits)
        ):
            raise ValueError(f"invalid windowBits {windowBits}")
        if memLevel is not None and memLevel not in MEM_LEVELS:
            raise ValueError(f"invalid memLevel {memLevel}")
        self.response = response
        self.noContextTakeover = noContextTakeover
        self.windowBits = windowBits
        self.memLevel = memLevel


class PerMessageDeflate(PerMessageCompress, PerMessageDeflateMixin):
    """The codec of one connection (raw DEFLATE, RFC 7692 section 7.2)."""

    DEFAULT_WINDOW_BITS = zlib.MAX_WBITS
    DEFAULT_MEM_LEVEL = 8

    def __init__(
        self,
        isServer,
        server_no_context_takeover,
        client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
        mem_level,
    ):
        self._isServer = isServer
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits or self.DEFAULT_WINDOW_BITS
        self.client_max_window_bits = client_max_window_bits or self.DEFAULT_WINDOW_BITS
        self.mem_level = mem_level or self.DEFAULT_MEM_LEVEL
        self._compressor = None
        self._decompressor = None

    @classmethod
    def createFromResponseAccept(cls, isServer, accept):
        response = accept.response
        return cls(
            isServer,
            response.server_no_context_takeover,
            accept.noContextTakeover
            if accept.noContextTakeover is not None
            else response.client_no_context_takeover,
            response.server_max_window_bits,
            accept.windowBits if accept.windowBits is not None else response.client_max_window_bits,
            accept.memLevel,
        )

    @classmethod
    def createFromOfferAccept(cls, isServer, accept):
        return cls(
            isServer,
            accept.noContextTakeover
            if accept.noContextTakeover is not None
            else accept.offer.requestNoContextTakeover,
            accept.requestNoContextTakeover,
            accept.windowBits if accept.windowBits is not None else accept.offer.requestMaxWindowBits,
            accept.requestMaxWindowBits,
            accept.memLevel,
        )

    def __json__(self) -> dict:
        return {
            "extension": self.EXTENSION_NAME,
            "isServer": self._isServer,
            "server_no_context_takeover": self.server_no_context_takeover,
            "client_no_context_takeover": self.client_no_context_takeover,
            "server_max_window_bits": self.server_max_window_bits,
            "client_max_window_bits": self.client_max_window_bits,
            "mem_level": self.mem_level,
        }

    def _own(self) -> tuple[bool, int]:
        if self._isServer:
            return self.server_no_context_takeover, self.server_max_window_bits
        return self.client_no_context_takeover, self.client_max_window_bits

    def _peer(self) -> tuple[bool, int]:
        if self._isServer:
            return self.client_no_context_takeover, self.client_max_window_bits
        return self.server_no_context_takeover, self.server_max_window_bits

    def startCompressMessage(self) -> None:
        no_takeover, bits = self._own()
        if self._compressor is None or no_takeover:
            self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, self.mem_level
            )

    def compressMessageData(self, data: bytes) -> bytes:
        return self._compressor.compress(data)

    def endCompressMessage(self) -> bytes:
        data = self._compressor.flush(zlib.Z_SYNC_FLUSH)
        return data[:-4]

    def startDecompressMessage(self) -> None:
        no_takeover, bits = self._peer()
        if self._decompressor is None or no_takeover:
            self._decompressor = zlib.decompressobj(-bits)

    def decompressMessageData(self, data: bytes) -> bytes:
        return self._decompressor.decompress(data)

    def endDecompressMessage(self) -> None:
        # the 4 octets RFC 7692 section 7.2.2 says to append (and the sender stripped)
        self._decompressor.decompress(b"\x00\x00\xff\xff")


PERMESSAGE_COMPRESSION_EXTENSION = {
    PerMessageDeflateMixin.EXTENSION_NAME: {
        "Offer": PerMessageDeflateOffer,
        "OfferAccept": PerMessageDeflateOfferAccept,
        "Response": PerMessageDeflateResponse,
        "ResponseAccept": PerMessageDeflateResponseAccept,
        "PMCE": PerMessageDeflate,
    },
}
