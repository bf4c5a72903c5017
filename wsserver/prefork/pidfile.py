"""The master's pid file: written atomically at start, removed at exit, read by ``wsserver reload``."""

from __future__ import annotations

import os


class PidFileTaken(Exception):
    """The pid file names another process that is running."""


def write_pid_file(path: str, pid: int) -> None:
    """Write ``pid`` to ``path`` (a temporary file renamed over it: readers never see half)."""
    other = read_pid_file(path)
    if other is not None and other != pid and alive(other):
        raise PidFileTaken(
            f"pid file {path} names a running process ({other}): is wsserver already running? "
            "Remove the file if not."
        )
    tmp = f"{path}.{pid}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_pid_file(path: str, pid: int) -> None:
    """Remove ``path`` if it still names ``pid`` (a newer master may have written its own)."""
    if read_pid_file(path) == pid:
        try:
            os.unlink(path)
        except OSError:
            pass


def read_pid_file(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
