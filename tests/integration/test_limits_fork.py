"""The cross-worker connection table shared with forked children."""

from __future__ import annotations

import os
import signal

import pytest

from wsserver.runtime.limits import ConnectionTable

pytestmark = pytest.mark.integration


def test_counts_are_shared_with_forked_children_and_cleared_when_they_die():
    table = ConnectionTable(rows=4, columns=2)
    table.assign(["a"])
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker: takes two connections, reports, then is killed
        counter = table.counter("a", 1, limit=3)
        counter.try_add()
        counter.try_add()
        os.write(write_end, b"x")
        signal.pause()
        os._exit(0)
    os.read(read_end, 1)
    mine = table.counter("a", 2, limit=3)
    assert mine.try_add() is None
    assert mine.try_add() == "max_connections"  # the child's two count against the total
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    table.clear_row(1)  # what the master does when it reaps a worker
    assert mine.try_add() is None and table.total("a") == 2
