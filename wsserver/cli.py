"""The ``wsserver`` command: serve, check, --version."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from wsserver import __version__
from wsserver.config import MAX_WORKERS, Config, ConfigError, dump_config
from wsserver.logs import configure as configure_logging
from wsserver.logs import log

logger = logging.getLogger("wsserver.cli")

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def _load(path: str | None) -> Config:
    """The config with the checks beyond its text (wsserver.preflight, step 1)."""
    from wsserver.preflight import load

    return load(path)


def _backlog_notes(config: Config) -> list[str]:
    from wsserver.runtime.listeners import kernel_somaxconn

    cap = kernel_somaxconn()
    notes = []
    for port in config.active_ports():
        if cap is not None and port.backlog > cap:
            notes.append(f"warning: port {port.alias}: backlog {port.backlog} is capped by the kernel "
                         f"at net.core.somaxconn = {cap}; effective backlog {cap}")
    return notes


def _import_endpoints(config: Config) -> str | None:
    """Import and instantiate the endpoints here (``check`` is a process of its own)."""
    from wsserver.runtime.dispatcher import EndpointLoadError, load_mounts

    try:
        load_mounts(config)
    except EndpointLoadError as exc:
        return str(exc)
    return None


def cmd_check(args: argparse.Namespace) -> int:
    from wsserver.preflight import check_file

    result = check_file(args.config, import_endpoints=_import_endpoints)
    config = result.config
    if config is None or result.errors:
        print("\n".join(result.errors), file=sys.stderr)
        return EXIT_CONFIG
    print(dump_config(config, redact=True), end="")
    for note in _backlog_notes(config) + result.notes + _broker_notes(config):
        print(f"# {note}")
    print(f"# {config.source}: OK", file=sys.stderr)
    return 0


def _broker_notes(config: Config) -> list[str]:
    """Whether ``[cluster] broker`` answers now: not a configuration error (the workers keep
    trying to connect), but what an operator checking a node wants to know."""
    if config.cluster is None:
        return []
    from wsserver.runtime.broker import ping

    answers, text = ping(config.cluster)
    return [f"cluster.broker: {'answers' if answers else 'does not answer'} ({text})"]


def cmd_serve(args: argparse.Namespace) -> int:
    # The master process: no gevent here (workers set it up after the fork), see wsserver.prefork.
    from wsserver.prefork.arbiter import Options, serve

    if args.workers is not None and not 0 <= args.workers <= MAX_WORKERS:
        # The same limit as [server] workers, in the same words as the file's errors.
        print(f"--workers = {args.workers}: must be an integer 0..{MAX_WORKERS}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = _load(args.config)
    except ConfigError as exc:
        configure_logging()
        for line in exc.errors:
            log(logger, "error", "invalid configuration", error=line)
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(args.log_level or config.server.log_level, args.log_format or config.server.log_format)
    from wsserver.preflight import preflight

    # Keystores opened once, here; the workers inherit the contexts. The endpoints are imported
    # by the master's run, in a child, so that the master never imports them.
    tls_errors = preflight(config)
    if tls_errors:
        for line in tls_errors:
            log(logger, "error", "invalid configuration", error=line)
        print("\n".join(tls_errors), file=sys.stderr)
        return EXIT_CONFIG
    for note in _backlog_notes(config):
        log(logger, "warning", note)
    options = Options(config_path=args.config, workers=args.workers, pid_file=args.pid, log_file=args.log_file,
                      log_level=args.log_level, log_format=args.log_format, reuse_port=args.reuse_port)
    from wsserver.admin.supervisor import AdminSupervisor

    return serve(config, options, services=[AdminSupervisor()])  # [admin]: the admin API and console


def cmd_reload(args: argparse.Namespace) -> int:
    """Send SIGHUP to the master named by the pid file."""
    from wsserver.prefork.pidfile import read_pid_file

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


def cmd_hash_password(args: argparse.Namespace) -> int:
    from wsserver.security.passwords import main as hash_password_main

    return hash_password_main(args)


def cmd_port_reset_access(args: argparse.Namespace) -> int:
    from wsserver.config.edit import EditError, reset_port_access

    try:
        changed = reset_port_access(args.config, args.alias)
    except EditError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    if changed:
        print(f"{args.config}: port {args.alias}: endpoint access reset to the default (allow every endpoint); "
              "reload a running server to apply it")
    else:
        print(f"{args.config}: port {args.alias}: endpoint access already at the default")
    return 0


def cmd_adapter_test(args: argparse.Namespace) -> int:
    """Try one [[adapters]] entry from the command line and show which servers answered."""
    import getpass

    from gevent import monkey

    monkey.patch_all()  # the backends' sockets, as in a worker
    from wsserver.adapters.cli import adapter_test

    try:
        config = _load(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    settings = next((a for a in config.adapters if a.name == args.name), None)
    if settings is None:
        known = ", ".join(a.name for a in config.adapters) or "none"
        print(f"{config.source}: no [[adapters]] entry named {args.name!r} (known: {known})", file=sys.stderr)
        return EXIT_CONFIG
    from wsserver.adapters.tls import check_adapter_tls, registry_setup

    problems = check_adapter_tls(config)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    password = os.environ.get("WSSERVER_ADAPTER_PASSWORD")
    if password is None and settings.type != "ocsp":
        password = getpass.getpass(f"password for {args.user}: ")
    return adapter_test(settings, args.user, password or "", tls_setup=registry_setup(config))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsserver", description="A pre-forking WebSocket (ws/wss) server.")
    from wsserver.protocol.fastpath import SPEEDUPS

    accelerator = "C masking accelerator" if SPEEDUPS else "pure-Python masking (C accelerator not built)"
    parser.add_argument("--version", action="version", version=f"wsserver {__version__} ({accelerator})")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (on the built-in default config without -c)")
    serve.add_argument("-c", "--config", help="path of wsserver.toml")
    serve.add_argument("--log-format", choices=("text", "json"), help="overrides [server] log_format")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error", "critical"),
                       help="overrides [server] log_level")
    serve.add_argument("--workers", type=int, metavar="N", help=f"worker processes (0 = CPU count, at most {MAX_WORKERS}); "
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

    hp = sub.add_parser("hash-password", help="print a hash for [[users]] password_hash (asks for the password)")
    hp.add_argument("--algorithm", choices=("scrypt", "argon2"), default="scrypt",
                    help="argon2 needs the argon2-cffi package")
    hp.add_argument("--stdin", action="store_true", help="read the password from one line of standard input")
    for cost in ("n", "r", "p"):
        hp.add_argument(f"--scrypt-{cost}", type=int, metavar=cost.upper(), help=f"scrypt cost {cost.upper()}")
    hp.set_defaults(func=cmd_hash_password)

    port = sub.add_parser("port", help="edit a port of a config file (comments are kept)")
    port_sub = port.add_subparsers(dest="port_command", required=True)
    reset = port_sub.add_parser("reset-access", help="restore the default endpoint access (allow every endpoint)")
    reset.add_argument("alias", help="the port's alias")
    reset.add_argument("-c", "--config", required=True, help="path of wsserver.toml")
    reset.set_defaults(func=cmd_port_reset_access)
    adapter = sub.add_parser("adapter", help="authentication adapters")
    adapter_sub = adapter.add_subparsers(dest="adapter_command", required=True)
    test = adapter_sub.add_parser("test", help="try an adapter: prints the servers tried, in order, with timings")
    test.add_argument("name", help="the [[adapters]] name")
    test.add_argument("--user", required=True, help="user name to check")
    test.add_argument("-c", "--config", required=True, help="path of wsserver.toml")
    test.set_defaults(func=cmd_adapter_test)

    from wsserver.admin.client import add_parser as add_package_parser

    add_package_parser(sub)  # wsserver package list|enable|disable|export|import (admin API client)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
