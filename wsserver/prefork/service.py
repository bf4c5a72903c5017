"""What the master's loop offers the services it runs beside the workers, and what it asks of them.

A service is a part of the master that is not about workers: the metrics listener
(:mod:`wsserver.prefork.status`), the admin process's supervisor
(:mod:`wsserver.admin.supervisor`), later a cluster link. The arbiter drives every service the
same way, from its one loop and never from a thread: it polls the descriptors a service
registers, calls ``tick`` once per turn, sleeps no longer than the earliest ``next_deadline``,
and tells each service what happened (a worker's message or exit, a new configuration, the end
of a reload). Nothing a service does may block: the loop also relays broadcasts and watches
heartbeats.

A service sees the master through :class:`MasterView` (read only) and acts on it only through
the few commands of :class:`MasterControl`; it never holds the arbiter itself, so the arbiter's
state stays the arbiter's.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wsserver.config import Config, PortConfig


class WorkerView(Protocol):
    """One worker as the master knows it."""

    @property
    def pid(self) -> int: ...
    @property
    def gen(self) -> int: ...
    @property
    def slot(self) -> int: ...
    @property
    def state(self) -> str: ...  # active | draining | stopping
    @property
    def ready(self) -> bool: ...  # said READY: it accepts connections
    @property
    def broker_up(self) -> bool: ...  # [cluster]: its last report of its broker connection


@dataclass(frozen=True)
class LogSettings:
    """Where and how a child of the master logs (the command line over the config file)."""

    file: str | None
    level: str
    format: str


class MasterView(Protocol):
    """The master's state, read only, as it is now (no copy: read it when needed)."""

    @property
    def pid(self) -> int: ...
    @property
    def config_path(self) -> str | None: ...  # None: the built-in configuration
    @property
    def stopping(self) -> bool: ...  # TERM/QUIT received: the master is on its way out
    @property
    def reloading(self) -> bool: ...  # a new generation is starting
    @property
    def generation(self) -> int: ...  # the current generation's number
    @property
    def config(self) -> Config: ...  # the current generation's configuration
    @property
    def target(self) -> int: ...  # how many workers the current generation should have
    @property
    def workers(self) -> Collection[WorkerView]: ...  # every live worker, of every generation

    def listening(self, port: PortConfig) -> list[tuple]:
        """The addresses ``port`` listens on now (one per reuse_port slot); empty if it does not."""
        ...

    def port_connections(self, alias: str) -> int:
        """Connections on the port ``alias`` across every worker."""
        ...

    def worker_connections(self, worker: WorkerView) -> dict[str, int]:
        """One worker's connections per port alias."""
        ...

    def log_settings(self, config: Config) -> LogSettings: ...


class MasterControl(Protocol):
    """The commands a service may give the master."""

    def reload(self) -> None:
        """As SIGHUP; the end is reported to every service's ``reload_result``."""
        ...

    def send_to_workers(self, data: bytes, pids: Collection[int] | None = None) -> list[int]:
        """Queue a relay frame to the workers (those in ``pids`` only, if given); the pids it went to."""
        ...

    def close_in_child(self) -> None:
        """In a child just forked by a service: close every descriptor of the master's."""
        ...


class MasterService:
    """A part of the master driven by its loop; every method does nothing unless overridden."""

    def start(self, view: MasterView, control: MasterControl) -> None:
        """Once, before the first worker is forked."""

    # ---- the loop ------------------------------------------------------------------------------
    def registrations(self) -> list[tuple[int, int]]:
        """(fd, poll events) to wait on in this turn of the loop."""
        return []

    def on_event(self, fd: int, events: int) -> None:
        """One of this service's descriptors is ready."""

    def tick(self, now: float) -> None:
        """Once per turn of the loop, after its events (``now``: time.monotonic())."""

    def next_deadline(self) -> float | None:
        """The monotonic time by which the loop must turn again for this service (None: no timer)."""
        return None

    # ---- what happened -------------------------------------------------------------------------
    def on_worker_message(self, worker: WorkerView, kind: int, body: bytes, raw: bytes) -> None:
        """A relay frame from a worker the master does not handle itself (READY, BROKER and
        PUBLISH it does); ``raw`` is the whole frame, to forward unchanged."""

    def on_worker_exit(self, worker: WorkerView, how: str, unexpected: bool) -> None:
        """A worker was reaped; ``unexpected``: it died while it should have been serving."""

    def on_child_exit(self, pid: int, how: str) -> bool:
        """A child that is no worker was reaped: True if it was this service's."""
        return False

    def on_config(self, config: Config) -> None:
        """The current generation's configuration changed (a reload started or was rolled back)."""

    def reload_result(self, result: str, errors: list[str]) -> None:
        """A reload ended: "success", "invalid" (nothing changed) or "failed" (rolled back)."""

    # ---- the end -------------------------------------------------------------------------------
    def close_in_child(self) -> None:
        """In any child the master forks: close this service's descriptors."""

    def stop(self) -> None:
        """The master stops (after its workers): release everything."""
