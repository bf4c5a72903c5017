"""What every long-lived process the master forks does first: the workers and the admin process.

A forked child starts as a copy of the master: its signal handlers, its unflushed stdio, its
logging setup. :func:`fork` flushes before forking and makes sure the child never returns into
the master's code; :func:`start` turns the copy into a child of its own (signals, gevent, title,
logging, stack dumps); :func:`run` gives it one exit path with the exit code the master
expects. This module imports gevent only inside :func:`start`: the master never has a hub.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from wsserver.logs import configure as configure_logging
from wsserver.logs import log

logger = logging.getLogger("wsserver.prefork.child")

EXIT_BOOT = 3  # the child could not start: the master counts a boot failure

# Signals that belong to the master: a child ignores them (a terminal's Ctrl-C or hang-up
# reaches the whole process group; the master decides what its children do).
MASTER_ONLY_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
# Signals a child acts on itself (its gevent handlers are installed later, on these defaults).
CHILD_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, signal.SIGCHLD)
# Writes every thread's Python stack to the child's log, from the C signal handler, so it works
# while the hub is blocked: the master sends it to a worker that missed its heartbeat before
# the SIGKILL, and an operator may send it to any child.
STACK_DUMP_SIGNAL = signal.SIGUSR2


def flush_stdio() -> None:
    """Before a fork: what the master buffered must not be written twice (once by the child)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def fork(in_child: Callable[[], object]) -> int:
    """Fork; the child runs ``in_child`` and exits (EXIT_BOOT should it return or raise).

    Returns the child's pid, in the parent.
    """
    flush_stdio()
    pid = os.fork()
    if pid == 0:
        try:
            in_child()
        finally:
            os._exit(EXIT_BOOT)
    return pid


def start(title: str, log_file: str | None, log_level: str, log_format: str) -> Any:
    """Right after the fork, before anything touches a socket: the child's signals, gevent
    (monkey-patched, the hub re-initialised), process title, logging and stack dumps.

    Returns the log stream (None: stderr).
    """
    for sig in MASTER_ONLY_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    for sig in CHILD_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)

    from gevent import monkey

    monkey.patch_all()
    import gevent

    gevent.reinit()

    set_title(title)
    log_stream = open_log(log_file)
    configure_logging(log_level, log_format, log_stream)
    dump_stacks_on_signal(log_stream)
    return log_stream


def run(main: Callable[[], int], crashed: str, **fields: Any) -> NoReturn:
    """The child's whole life: ``main()``'s return value is the exit code; never returns."""
    code = EXIT_BOOT
    try:
        code = main()
    except BaseException:
        log(logger, "error", crashed, exc_info=True, **fields)
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def dump_stacks_on_signal(log_stream: Any) -> None:
    """Arm STACK_DUMP_SIGNAL to write the stacks to ``log_stream`` (None: stderr); again after
    the log file is reopened, since faulthandler writes to the file's descriptor."""
    faulthandler.register(STACK_DUMP_SIGNAL, file=log_stream or sys.stderr, all_threads=True, chain=False)


def set_title(title: str) -> None:
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


def open_log(path: str | None) -> Any:
    return open(path, "a", buffering=1) if path else None
