"""Connection counts per port across all workers, for ``max_connections``.

A table in shared memory made by the master before it forks: one column per port alias,
one row per worker (the worker's cell on the prefork load board). A worker only ever writes
its own row; the total of a port is the sum of its column. Adding a connection checks the
total and increments under an exclusive ``lockf`` lock on the table's file: the kernel drops
that lock when a process dies, so a worker killed mid-update cannot wedge the others. When
the master reaps a worker it clears the worker's row, since its connections died with it.
"""

from __future__ import annotations

import fcntl
import mmap
import tempfile

ROWS = 1024  # as many as the prefork load board has cells
COLUMNS = 256  # port aliases ever seen by one master


class ConnectionTable:
    def __init__(self, rows: int = ROWS, columns: int = COLUMNS) -> None:
        self.rows = rows
        self.columns_max = columns
        self._file = tempfile.TemporaryFile(prefix="wsserver-connections-")  # noqa: SIM115 - lives with us
        self._file.truncate(4 * rows * columns)
        self._mem = mmap.mmap(self._file.fileno(), 4 * rows * columns)  # MAP_SHARED: seen after fork
        self._cells = memoryview(self._mem).cast("i")
        self.columns: dict[str, int] = {}

    # ---- the master ------------------------------------------------------------------------
    def assign(self, aliases: list[str]) -> dict[str, int]:
        """Give every alias a column (stable for the master's life); returns the mapping."""
        for alias in aliases:
            if alias not in self.columns:
                if len(self.columns) >= self.columns_max:
                    raise RuntimeError(f"more than {self.columns_max} port aliases over this master's life")
                self.columns[alias] = len(self.columns)
        return dict(self.columns)

    def clear_row(self, row: int) -> None:
        """A worker is gone (or a new one takes its row): its connections are gone too."""
        with self._locked():
            for column in range(len(self.columns)):
                self._cells[column * self.rows + row] = 0

    # ---- the workers -----------------------------------------------------------------------
    def counter(self, alias: str, row: int, limit: int, per_worker_limit: int = 0) -> PortCounter:
        column = self.columns.get(alias)
        if column is None:  # single-process use: the table is ours alone
            column = self.assign([alias])[alias]
        return PortCounter(self, column * self.rows, row, limit, per_worker_limit)

    def total(self, alias: str) -> int:
        column = self.columns[alias]
        return sum(self._cells[column * self.rows : (column + 1) * self.rows])

    def row(self, row: int) -> dict[str, int]:
        """One worker's connections per port alias (for the admin's worker list)."""
        return {alias: self._cells[column * self.rows + row] for alias, column in self.columns.items()}

    def _locked(self) -> _Lock:
        return _Lock(self._file.fileno())


class _Lock:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)


class PortCounter:
    """One worker's view of one port's connections: ``try_add`` before accepting, ``remove`` after."""

    __slots__ = ("_base", "_cell", "_table", "limit", "per_worker_limit")

    def __init__(
        self, table: ConnectionTable, base: int, row: int, limit: int, per_worker_limit: int
    ) -> None:
        self._table = table
        self._base = base
        self._cell = base + row
        self.limit = limit
        self.per_worker_limit = per_worker_limit

    @property
    def local(self) -> int:
        return self._table._cells[self._cell]

    @property
    def total(self) -> int:
        return sum(self._table._cells[self._base : self._base + self._table.rows])

    def try_add(self) -> str | None:
        """Count one more connection, or return why not ("max_connections" or "max_connections_per_worker")."""
        cells = self._table._cells
        if self.per_worker_limit and cells[self._cell] >= self.per_worker_limit:
            return "max_connections_per_worker"
        if not self.limit:
            cells[self._cell] += 1  # only this process writes its cell: no lock needed
            return None
        with self._table._locked():
            if self.total >= self.limit:
                return "max_connections"
            cells[self._cell] += 1
        return None

    def remove(self) -> None:
        cells = self._table._cells
        if not self.limit:
            cells[self._cell] -= 1
            return
        with self._table._locked():
            cells[self._cell] -= 1
