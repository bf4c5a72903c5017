"""The ``wsserver`` command: serve, check, --version."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from wsserver import __version__
from wsserver.config import Config, ConfigError, dump_config, load_config
from wsserver.logs import configure as configure_logging
from wsserver.logs import log

logger = logging.getLogger("wsserver.cli")

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def _load(path: str | None) -> Config:
    return load_config(path)


def _backlog_notes(config: Config) -> list[str]:
    from wsserver.runtime.listeners import kernel_somaxconn

    cap = kernel_somaxconn()
    notes = []
    for port in config.active_ports():
        if cap is not None and port.backlog > cap:
            notes.append(f"warning: port {port.alias}: backlog {port.backlog} is capped by the kernel "
                         f"at net.core.somaxconn = {cap}; effective backlog {cap}")
    return notes


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = _load(args.config)
        from wsserver.runtime.dispatcher import EndpointLoadError, load_mounts

        load_mounts(config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except EndpointLoadError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    print(dump_config(config), end="")
    for note in _backlog_notes(config):
        print(f"# {note}")
    print(f"# {config.source}: OK", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # The master process: no gevent here (workers set it up after the fork), see wsserver.prefork.
    from wsserver.prefork.arbiter import Options, serve

    try:
        config = _load(args.config)
    except ConfigError as exc:
        configure_logging()
        for line in exc.errors:
            log(logger, "error", "invalid configuration", error=line)
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(args.log_level or config.server.log_level, args.log_format or config.server.log_format)
    for note in _backlog_notes(config):
        log(logger, "warning", note)
    options = Options(config_path=args.config, workers=args.workers, pid_file=args.pid, log_file=args.log_file,
                      log_level=args.log_level, log_format=args.log_format, reuse_port=args.reuse_port)
    return serve(config, options)


def cmd_reload(args: argparse.Namespace) -> int:
    """Send SIGHUP to the master named by the pid file."""
    from wsserver.prefork.arbiter import read_pid_file

    path = args.pid
    if not path and args.config:
        try:
            path = _load(args.config).server.pid_file
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_CONFIG
    if not path:
        print("wsserver reload: no pid file: give --pid FILE (or -c with [server] pid_file)", file=sys.stderr)
        return EXIT_RUNTIME
    pid = read_pid_file(path)
    if pid is None:
        print(f"wsserver reload: cannot read a pid from {path}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"wsserver reload: cannot signal pid {pid} (from {path}): {exc.strerror}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"wsserver reload: sent HUP to {pid}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsserver", description="A pre-forking WebSocket (ws/wss) server.")
    parser.add_argument("--version", action="version", version=f"wsserver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (on the built-in default config without -c)")
    serve.add_argument("-c", "--config", help="path of wsserver.toml")
    serve.add_argument("--log-format", choices=("text", "json"), help="overrides [server] log_format")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error", "critical"),
                       help="overrides [server] log_level")
    serve.add_argument("--workers", type=int, metavar="N", help="worker processes (0 = CPU count); "
                       "overrides [server] workers")
    serve.add_argument("--pid", metavar="FILE", help="write the master's pid here; overrides [server] pid_file")
    serve.add_argument("--log-file", metavar="FILE", help="log here instead of stderr (reopened on SIGUSR1)")
    serve.add_argument("--reuse-port", action="store_true", default=None,
                       help="one SO_REUSEPORT socket per worker instead of shared sockets")
    serve.set_defaults(func=cmd_serve)

    reload = sub.add_parser("reload", help="reload a running server (sends SIGHUP to its master)")
    reload.add_argument("--pid", metavar="FILE", help="the pid file of the running server")
    reload.add_argument("-c", "--config", help="take the pid file from this config's [server] pid_file")
    reload.set_defaults(func=cmd_reload)

    check = sub.add_parser("check", help="validate a config file and print the effective config")
    check.add_argument("-c", "--config", required=True, help="path of wsserver.toml")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
