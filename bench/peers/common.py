"""Command line shared by the Python peers."""

from __future__ import annotations

import argparse
import ssl


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=6000)
    parser.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--certfile", default="", help="PEM certificate chain: serve wss")
    parser.add_argument("--keyfile", default="")
    parser.add_argument("--max-size", type=int, default=16 * 1024 * 1024)
    return parser.parse_args()


def server_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.certfile:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.certfile, args.keyfile or None)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
