"""tests/unit holds pure tests: no socket is opened, no process started or forked (tests/integration
has those). Every test here runs with socket creation, fork and process starts refused.

Allowed: ``socket.socketpair()`` (an in-process pipe, no address: its sockets are made from file
descriptors) and in-memory TLS (``ssl.MemoryBIO``), threads and greenlets.
"""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import socket
import subprocess
from collections.abc import Callable, Generator, Iterator
from typing import Any

import gevent.os
import gevent.socket
import gevent.subprocess
import pytest


@contextlib.contextmanager
def _pure() -> Iterator[list[str]]:
    refused: list[str] = []
    monkeypatch = pytest.MonkeyPatch()

    def refuse(what: str) -> Callable[..., Any]:
        def refused_call(*args: Any, **kwargs: Any) -> Any:
            refused.append(what)
            pytest.fail(f"a unit test {what}: it belongs in tests/integration (tests/unit/conftest.py)")

        return refused_call

    def guard_socket(cls: type) -> None:
        init = cls.__init__

        def __init__(
            self: Any, family: Any = -1, type: Any = -1, proto: Any = -1, fileno: Any = None
        ) -> None:
            if fileno is None:  # socketpair() and fromfd() pass the descriptor they wrap
                refuse("opens a socket")()
            init(self, family, type, proto, fileno)

        monkeypatch.setattr(cls, "__init__", __init__)

    try:
        guard_socket(socket.socket)
        if gevent.socket.socket is not socket.socket:
            guard_socket(gevent.socket.socket)
        for module, name in (
            (os, "fork"),
            (os, "forkpty"),
            (os, "system"),
            (os, "posix_spawn"),
            (os, "posix_spawnp"),
            (gevent.os, "fork"),
        ):
            if hasattr(module, name):
                monkeypatch.setattr(
                    module, name, refuse(f"forks or starts a process ({module.__name__}.{name})")
                )
        monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a process (subprocess)"))
        monkeypatch.setattr(
            gevent.subprocess.Popen, "__init__", refuse("starts a process (gevent.subprocess)")
        )
        monkeypatch.setattr(
            multiprocessing.process.BaseProcess, "start", refuse("starts a process (multiprocessing)")
        )
        yield refused
    finally:
        monkeypatch.undo()


# Every phase, so that module- and session-scoped fixtures (set up in the first test's setup) are
# covered too; the failure is reported even when the code under test caught it.
def _guarded() -> Generator[None, object, object]:
    with _pure() as refused:
        result = yield
    if refused:
        pytest.fail(f"a unit test {refused[0]}: it belongs in tests/integration (tests/unit/conftest.py)")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded())
