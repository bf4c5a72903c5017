"""wsserver: a pre-forking WebSocket (ws/wss) server configured by one TOML file."""

from wsserver.endpoints.base import Endpoint

__version__ = "0.1.0"
__all__ = ["Endpoint", "__version__"]
