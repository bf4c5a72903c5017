"""The ``wsserver`` command: serve, check, --version."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from wsserver.config import Config, ConfigError, dump_config
from wsserver.config.flags import apply_overrides, check_overrides, cli_keys, flag_metavar
from wsserver.config.settings import describe
from wsserver.logs import configure as configure_logging
from wsserver.logs import log
from wsserver.version import __version__

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
            notes.append(
                f"warning: port {port.alias}: backlog {port.backlog} is capped by the kernel "
                f"at net.core.somaxconn = {cap}; effective backlog {cap}"
            )
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

    overrides = setting_overrides(args)
    try:
        # The flags are checked like the file's keys (--workers = 999: must be an integer 0..256)
        # before the file is read; the master applies them to every load of it, reloads included.
        check_overrides(Config, overrides)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = apply_overrides(_load(args.config), overrides)
    except ConfigError as exc:
        configure_logging()
        for line in exc.errors:
            log(logger, "error", "invalid configuration", error=line)
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.server.log_level, config.server.log_format)
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
    options = Options(config_path=args.config, log_file=args.log_file, overrides=overrides)
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
        print(
            f"{args.config}: port {args.alias}: endpoint access reset to the default (allow every endpoint); "
            "reload a running server to apply it"
        )
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
    from wsserver.security.adapter_tls import check_adapter_tls, registry_setup

    problems = check_adapter_tls(config)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    password = os.environ.get("WSSERVER_ADAPTER_PASSWORD")
    if password is None and settings.type != "ocsp":
        password = getpass.getpass(f"password for {args.user}: ")
    return adapter_test(settings, args.user, password or "", tls_setup=registry_setup(config))


def _flag_dest(path: str) -> str:
    return "setting__" + path.replace(".", "__")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag for each setting the registry marks with ``cli`` (gunicorn's model): its help,
    choices and kind come from the setting; its value is checked by the settings engine."""
    for path, key in cli_keys(Config):
        table, _, name = path.rpartition(".")
        where = f"overrides [{table}] {name}" if table else f"overrides {name}"
        help_text = f"{key.help}; {where}" if key.help else where
        if key.types == (int,):
            help_text = f"{help_text} ({describe(key)})"
        flag, dest = key.meta("cli"), _flag_dest(path)
        metavar = flag_metavar(key)
        if metavar is None:
            parser.add_argument(
                flag, dest=dest, action="store_const", const=True, default=None, help=help_text
            )
        else:
            # Choices and ranges are the engine's to check, in the file's words (apply_overrides).
            parser.add_argument(
                flag,
                dest=dest,
                type=int if key.types == (int,) else str,
                metavar=metavar,
                default=None,
                help=help_text,
            )


def setting_overrides(args: argparse.Namespace) -> dict[str, object]:
    """{"server.workers": 4, ...}: the settings given on the command line."""
    return {
        path: value
        for path, _key in cli_keys(Config)
        if (value := getattr(args, _flag_dest(path), None)) is not None
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsserver", description="A pre-forking WebSocket (ws/wss) server.")
    from wsserver.protocol.fastpath import SPEEDUPS

    accelerator = "C masking accelerator" if SPEEDUPS else "pure-Python masking (C accelerator not built)"
    parser.add_argument("--version", action="version", version=f"wsserver {__version__} ({accelerator})")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (on the built-in default config without -c)")
    serve.add_argument("-c", "--config", help="path of wsserver.toml")
    add_setting_flags(serve)
    serve.add_argument("--log-file", metavar="FILE", help="log here instead of stderr (reopened on SIGUSR1)")
    serve.set_defaults(func=cmd_serve)

    reload = sub.add_parser("reload", help="reload a running server (sends SIGHUP to its master)")
    reload.add_argument("--pid", metavar="FILE", help="the pid file of the running server")
    reload.add_argument("-c", "--config", help="take the pid file from this config's [server] pid_file")
    reload.set_defaults(func=cmd_reload)

    check = sub.add_parser("check", help="validate a config file and print the effective config")
    check.add_argument("-c", "--config", required=True, help="path of wsserver.toml")
    check.set_defaults(func=cmd_check)

    hp = sub.add_parser(
        "hash-password", help="print a hash for [[users]] password_hash (asks for the password)"
    )
    hp.add_argument(
        "--algorithm",
        choices=("scrypt", "argon2"),
        default="scrypt",
        help="argon2 needs the argon2-cffi package",
    )
    hp.add_argument("--stdin", action="store_true", help="read the password from one line of standard input")
    for cost in ("n", "r", "p"):
        hp.add_argument(
            f"--scrypt-{cost}", type=int, metavar=cost.upper(), help=f"scrypt cost {cost.upper()}"
        )
    hp.set_defaults(func=cmd_hash_password)

    port = sub.add_parser("port", help="edit a port of a config file (comments are kept)")
    port_sub = port.add_subparsers(dest="port_command", required=True)
    reset = port_sub.add_parser(
        "reset-access", help="restore the default endpoint access (allow every endpoint)"
    )
    reset.add_argument("alias", help="the port's alias")
    reset.add_argument("-c", "--config", required=True, help="path of wsserver.toml")
    reset.set_defaults(func=cmd_port_reset_access)
    adapter = sub.add_parser("adapter", help="authentication adapters")
    adapter_sub = adapter.add_subparsers(dest="adapter_command", required=True)
    test = adapter_sub.add_parser(
        "test", help="try an adapter: prints the servers tried, in order, with timings"
    )
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
