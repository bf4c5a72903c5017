"""Endpoints: the user code mounted on paths, and the built-ins that ship with wsserver."""

from wsserver.endpoints.base import Endpoint, SessionAPI

__all__ = ["Endpoint", "SessionAPI"]
