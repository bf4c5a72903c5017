"""``wsserver package ...``: the command line's client of the admin API (stdlib only).

    wsserver package list                      [--admin URL] [--user NAME]
    wsserver package enable|disable NAME
    wsserver package export NAME [-o FILE]
    wsserver package import FILE [--dry-run]   (FILE "-" = standard input)

The password comes from ``WSSERVER_ADMIN_PASSWORD`` or is asked for on the terminal; it is
never taken from the command line (other users could read it in ``ps``).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9100"
PASSWORD_ENV = "WSSERVER_ADMIN_PASSWORD"
EXIT_ERROR = 1
EXIT_INVALID = 2


class AdminError(Exception):
    def __init__(self, status: int, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


class AdminClient:
    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        cafile: str | None = None,
        insecure: bool = False,
        timeout: float = 300.0,
    ) -> None:
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if self.url.startswith("https:"):
            self.context = ssl.create_default_context(cafile=cafile)
            if insecure:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            data = exc.read()
            try:
                doc = json.loads(data)
            except ValueError:
                doc = {"error": data.decode(errors="replace").strip() or exc.reason}
            raise AdminError(
                exc.code, str(doc.get("error", exc.reason)), list(doc.get("errors", []))
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError(0, f"cannot reach the admin API at {self.url}: {reason}") from None

    def json(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> Any:
        return json.loads(self.request(method, path, body, content_type)[1])


def _client(args: argparse.Namespace) -> AdminClient:
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = getpass.getpass(f"Password of {args.user} at {args.admin}: ")
    return AdminClient(args.admin, args.user, password, cafile=args.cacert, insecure=args.insecure)


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def main(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        if args.package_command == "list":
            for p in client.json("GET", "/api/packages")["packages"]:
                state = "enabled " if p["enabled"] else "disabled"
                print(
                    f"{p['name']}\t{state}\tports: {', '.join(p['ports']) or '-'}\t"
                    f"connections: {p['connections']}"
                )
        elif args.package_command in ("enable", "disable"):
            doc = client.json("POST", f"/api/packages/{_quote(args.name)}/{args.package_command}")
            verb = "enabled" if args.package_command == "enable" else "disabled"
            if doc.get("changed"):
                applied = f" (applied: generation {doc['reload'].get('gen')})"
            else:
                applied = " (it already was)"
            print(f"package {args.name} {verb}{applied}; ports: {', '.join(doc['package']['ports']) or '-'}")
        elif args.package_command == "export":
            _, data = client.request("GET", f"/api/packages/{_quote(args.name)}/export")
            if args.output and args.output != "-":
                with open(args.output, "wb") as f:
                    f.write(data)
                print(f"package {args.name} exported to {args.output}", file=sys.stderr)
            else:
                sys.stdout.write(data.decode())
        elif args.package_command == "import":
            if args.file == "-":
                text = sys.stdin.read()
            else:
                with open(args.file, encoding="utf-8") as f:
                    text = f.read()
            path = "/api/packages/import" + ("?dry_run=1" if args.dry_run else "")
            doc = client.json("POST", path, text.encode(), "application/toml")
            for item in doc["items"]:
                detail = f" ({item['detail']})" if item["detail"] else ""
                print(f"{item['action']}: {item['type']} {item['name']}{detail}")
            summary = f"{doc['created']} created, {doc['kept']} kept as they were"
            print(("dry run: " if args.dry_run else "") + summary, file=sys.stderr)
    except AdminError as exc:
        print(
            f"wsserver package {args.package_command}: {exc.message}"
            + (f" (HTTP {exc.status})" if exc.status else ""),
            file=sys.stderr,
        )
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_INVALID if exc.status == 400 else EXIT_ERROR
    return 0


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The connection options, accepted before and after the sub-command."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--admin",
        default=default(os.environ.get("WSSERVER_ADMIN_URL", DEFAULT_URL)),
        help=f"admin API URL (default $WSSERVER_ADMIN_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--user",
        default=default(os.environ.get("WSSERVER_ADMIN_USER", "admin")),
        help="admin user (default $WSSERVER_ADMIN_USER or admin); the password comes from "
        f"${PASSWORD_ENV} or is asked for",
    )
    parser.add_argument(
        "--cacert", default=default(None), help="CA certificate(s) to verify an https admin listener"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=default(False),
        help="https without certificate verification",
    )


def add_parser(sub: Any) -> None:
    """``wsserver package ...`` on the CLI's subparsers."""
    package = sub.add_parser("package", help="list, enable, disable, export or import packages (admin API)")
    _common(package, suppress=False)
    cmds = package.add_subparsers(dest="package_command", required=True)
    _common(cmds.add_parser("list", help="packages with their state and ports"), suppress=True)
    for verb in ("enable", "disable"):
        cmd = cmds.add_parser(
            verb, help=f"{verb} a package (its ports {'start' if verb == 'enable' else 'stop'})"
        )
        cmd.add_argument("name")
        _common(cmd, suppress=True)
    export = cmds.add_parser("export", help="a self-contained TOML of the package's ports and endpoints")
    export.add_argument("name")
    export.add_argument("-o", "--output", help="write to FILE instead of standard output")
    _common(export, suppress=True)
    imp = cmds.add_parser("import", help="create the ports (by number) and endpoints this server lacks")
    imp.add_argument("file", help='a package export; "-" = standard input')
    imp.add_argument("--dry-run", action="store_true", help="only report what would be done")
    _common(imp, suppress=True)
    package.set_defaults(func=main)
