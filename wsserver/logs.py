"""Structured logs: one line per event, ``key=value`` text or JSON.

Call sites pass fields as keywords (``log(logger, "info", "connection closed", port=..., peer=...)``);
the formatter renders them. Secrets never go into fields: callers pass names, not credentials.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from types import TracebackType
from typing import Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        parts = [
            f"{ts}.{int(record.msecs):03d}",
            record.levelname.lower(),
            f"pid={os.getpid()}",
            f"msg={_quote(record.getMessage())}",
        ]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_quote(value)}")
        if record.exc_info:
            parts.append("exc=" + json.dumps(self.formatException(record.exc_info)))
        return " ".join(parts)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "pid": os.getpid(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Install one handler on the ``wsserver`` logger (idempotent: replaces earlier ones)."""
    root = logging.getLogger("wsserver")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    root.propagate = False


ExcInfo = bool | tuple[type[BaseException], BaseException, TracebackType | None]


def log(logger: logging.Logger, level: str, msg: str, exc_info: ExcInfo = False, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields`` at ``level``."""
    lvl = _LEVELS[level]
    if logger.isEnabledFor(lvl):
        logger.log(lvl, msg, exc_info=exc_info, extra={"fields": fields})
