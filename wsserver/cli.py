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
    # Cooperative I/O everywhere in this process, endpoint code included, before any of it loads.
    from gevent import monkey

    monkey.patch_all()
    import gevent

    from wsserver.runtime.dispatcher import EndpointLoadError
    from wsserver.runtime.listeners import bind_listener
    from wsserver.runtime.worker import WorkerRuntime

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
    try:
        listeners = [bind_listener(port) for port in config.active_ports()]
    except OSError as exc:
        log(logger, "error", "cannot listen", error=str(exc))
        return EXIT_RUNTIME
    try:
        runtime = WorkerRuntime(config, listeners)
    except EndpointLoadError as exc:
        log(logger, "error", "invalid configuration", error=str(exc))
        return EXIT_CONFIG

    def stop(signame: str) -> None:
        log(logger, "info", "stopping", signal=signame, graceful_timeout=config.server.graceful_timeout)
        gevent.spawn(runtime.stop, config.server.graceful_timeout)

    gevent.signal_handler(signal.SIGTERM, stop, "TERM")
    gevent.signal_handler(signal.SIGINT, stop, "INT")
    runtime.start()
    log(logger, "info", "wsserver started", version=__version__, config=config.source, pid=os.getpid())
    runtime.stopped.wait()
    for bl in listeners:
        bl.sock.close()
    log(logger, "info", "wsserver stopped")
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
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a config file and print the effective config")
    check.add_argument("-c", "--config", required=True, help="path of wsserver.toml")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
