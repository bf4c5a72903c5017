"""The cross-worker connection table behind max_connections."""

from __future__ import annotations

from wsserver.runtime.limits import ConnectionTable


def test_total_limit_across_rows():
    table = ConnectionTable(rows=4, columns=2)
    table.assign(["a", "b"])
    w1, w2 = table.counter("a", 1, limit=3), table.counter("a", 2, limit=3)
    assert [w1.try_add(), w2.try_add(), w1.try_add()] == [None, None, None]
    assert w2.try_add() == "max_connections"
    w1.remove()
    assert w2.try_add() is None
    assert table.total("a") == 3 and w1.local == 1 and w2.local == 2
    assert table.counter("b", 1, limit=1).try_add() is None  # ports are counted apart


def test_per_worker_limit():
    table = ConnectionTable(rows=4, columns=2)
    counter = table.counter("a", 1, limit=0, per_worker_limit=2)
    assert [counter.try_add(), counter.try_add(), counter.try_add()] == [
        None,
        None,
        "max_connections_per_worker",
    ]
