"""wsserver: a pre-forking WebSocket (ws/wss) server configured by one TOML file."""

from wsserver.endpoints.base import Endpoint
from wsserver.protocol.close_codes import CloseCode
from wsserver.runtime.envelope import BrokerUnavailable
from wsserver.version import __version__

__all__ = ["BrokerUnavailable", "CloseCode", "Endpoint", "__version__"]
