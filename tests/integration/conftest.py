from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, free_port, port_config


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start wsserver processes for a test; every one is stopped (by PID) afterwards."""
    started: list[ServerProcess] = []
    counter = 0

    def start(
        config_text: str | None,
        wait_for: tuple[str, int] | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        nonlocal counter
        counter += 1
        workdir = tmp_path / f"server{counter}"
        workdir.mkdir()
        server = ServerProcess(workdir, config_text, args=args, env=env)
        started.append(server)
        return server.start(wait_for=wait_for)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def echo_server(start_server) -> tuple[ServerProcess, int]:
    """One ws port on 127.0.0.1 with /echo, default settings."""
    port = free_port()
    server = start_server(port_config(port), wait_for=("127.0.0.1", port))
    return server, port


__all__ = ["free_port", "port_config"]
