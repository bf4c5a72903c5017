"""What the harness reads from /proc about a server and its children: CPU time, RSS, threads."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()  # fields from the 3rd (state) on


def tree_pids(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo and len(out) < 10_000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of every live process of the tree, plus cutime + cstime of each (the children it has
    reaped): each process, live or gone, is counted once."""
    ticks = 0
    for pid in tree_pids(root):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def _status_value(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    return sum(_status_value(pid, "VmRSS:") for pid in tree_pids(root))


def tree_threads(root: int) -> int:
    return sum(_status_value(pid, "Threads:") for pid in tree_pids(root))


def cpus_busy_seconds(cpus: list[int]) -> float:
    """Busy time (everything but idle and iowait) of the given CPUs since boot, from /proc/stat."""
    wanted = {f"cpu{c}" for c in cpus}
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in wanted:
                values = [int(v) for v in parts[1:]]
                busy += sum(values[:8]) - values[3] - values[4]  # user..steal, less idle and iowait
    return busy / CLK_TCK
