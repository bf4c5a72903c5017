"""wsserver: a pre-forking WebSocket (ws/wss) server configured by one TOML file."""

from wsserver.endpoints.base import Endpoint
from wsserver.protocol.close_codes import CloseCode
from wsserver.runtime.broker import BrokerUnavailable

__version__ = "0.1.0"
__all__ = ["BrokerUnavailable", "CloseCode", "Endpoint", "__version__"]
