"""The config file as the admin sees it: read with an ETag, change, validate, write, apply.

One change at a time (a lock), each:

1. reads the file and checks ``If-Match`` against its ETag (412 when it changed meanwhile);
2. makes the edit (:mod:`wsserver.admin.edits`) on the text;
3. validates the new text as ``wsserver check`` does (:func:`wsserver.preflight.check_text`:
   the config with the file's name as source, the endpoint handlers importable, the keystores
   openable) — 400 with the same error lines, and the file is not touched;
4. writes it with :func:`write_atomic` (temp file, fsync, rename: a crash leaves the old or
   the new file);
5. asks the master for a hitless reload and waits for its outcome; if the reload does not
   complete (a port cannot be bound, the new workers do not start), the old text is written
   back, so a refused change leaves the file as it was.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from wsserver.admin.edits import EditError
from wsserver.config import Config, ConfigError, write_atomic
from wsserver.preflight import check_text, parse

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

# Test hook: seconds to sleep before each fsync of a config write, so a test can kill the
# server while the temp file is written and not yet renamed.
WRITE_DELAY_ENV = "WSSERVER_ADMIN_TEST_WRITE_DELAY"


class Master(Protocol):
    def reload(self) -> dict[str, Any]:
        """Reload and wait: ``{"result": "success" | "invalid" | "failed", "errors": [...], "gen": n}``."""


class StoreError(Exception):
    """A change refused; ``status`` is the HTTP status, ``errors`` the validation lines."""

    def __init__(
        self, status: int, message: str, errors: list[str] | None = None, etag: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.etag = etag

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.message, "errors": self.errors}


@dataclass
class Committed:
    etag: str
    changed: bool
    config: Config | None = None
    reload: dict[str, Any] = field(default_factory=dict)
    extra: Any = None  # what the edit function returned beside the text (an import report)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def etag_matches(header: str, etag: str) -> bool:
    """``If-Match``: ``*`` or a list of strong entity tags."""
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags


RELOAD_STATUS = {"invalid": 400, "failed": 409}


def _import_endpoints(config: Config) -> str | None:
    """The admin process imports the handlers itself: it runs gevent, so it does not fork."""
    from wsserver.runtime.dispatcher import EndpointLoadError, load_mounts

    try:
        load_mounts(config)
    except EndpointLoadError as exc:
        return str(exc)
    return None


def validate(text: str, source: str) -> Config:
    """What ``wsserver check`` checks; raises StoreError(400) with its error lines."""
    result = check_text(text, source, import_endpoints=_import_endpoints)
    if result.config is None or result.errors:
        raise StoreError(400, "invalid configuration", result.errors)
    return result.config


class ConfigStore:
    def __init__(self, path: str | None, master: Master) -> None:
        self.path = path
        self.master = master
        self.lock = threading.Lock()
        self.write_delay = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)

    def _need_file(self) -> str:
        if not self.path:
            raise StoreError(409, "the server runs the built-in configuration (no -c FILE): nothing to edit")
        return self.path

    def read(self) -> tuple[str, str]:
        """(text, ETag) of the file now."""
        path = self._need_file()
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise StoreError(500, f"{path}: cannot read the config file: {exc.strerror or exc}") from None
        try:
            return raw.decode("utf-8"), etag_of(raw)
        except UnicodeDecodeError:
            raise StoreError(500, f"{path}: the config file is not UTF-8 text") from None

    def current(self) -> tuple[Config, str]:
        """The validated config in the file, and its ETag (400 if someone broke the file)."""
        text, etag = self.read()
        try:
            return parse(text, self._need_file()), etag
        except ConfigError as exc:
            raise StoreError(
                400, "the config file is invalid (fix it, or restore it, first)", exc.errors, etag
            ) from None

    def change(
        self, edit: Callable[[str], Any], if_match: str | None = None, dry_run: bool = False
    ) -> Committed:
        """Apply ``edit`` (text -> new text, or (new text, extra)); see the module doc."""
        path = self._need_file()
        with self.lock:
            text, etag = self.read()
            if if_match is not None and not etag_matches(if_match, etag):
                raise StoreError(
                    412, "the config file changed since you read it: reload it and redo the change", etag=etag
                )
            try:
                result = edit(text)
            except EditError as exc:
                raise StoreError(exc.status, str(exc), etag=etag) from None
            new_text, extra = result if isinstance(result, tuple) else (result, None)
            if new_text == text:
                return Committed(etag, changed=False, extra=extra)
            config = validate(new_text, path)
            new_etag = etag_of(new_text.encode("utf-8"))
            if dry_run:
                return Committed(etag, changed=False, config=config, extra=extra)
            self._write(path, new_text)
            outcome = self.master.reload()
            if outcome.get("result") != "success":
                restored = self._restore(path, new_text, text)
                message = "the server could not apply the change" + (
                    "; the file was restored"
                    if restored
                    else "; the file changed meanwhile and was left as it is"
                )
                raise StoreError(
                    RELOAD_STATUS.get(outcome.get("result", ""), 409),
                    message,
                    list(outcome.get("errors", [])),
                    etag if restored else None,
                )
            return Committed(new_etag, changed=True, config=config, reload=outcome, extra=extra)

    def reload(self) -> dict[str, Any]:
        with self.lock:
            return self.master.reload()

    def _restore(self, path: str, written: str, old: str) -> bool:
        try:
            now, _ = self.read()
        except StoreError:
            return False
        if now != written:
            return False
        self._write(path, old)
        return True

    def _write(self, path: str, text: str) -> None:
        if not self.write_delay:
            write_atomic(path, text)
            return
        real_fsync = os.fsync
        delay = self.write_delay

        def slow_fsync(fd: FileDescriptorLike) -> None:
            time.sleep(delay)
            real_fsync(fd)

        os.fsync = slow_fsync
        try:
            write_atomic(path, text)
        finally:
            os.fsync = real_fsync
