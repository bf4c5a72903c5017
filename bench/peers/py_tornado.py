"""Tornado echo server (tornado.websocket.WebSocketHandler) on the stock asyncio loop."""

from __future__ import annotations

import asyncio

import tornado.web
import tornado.websocket

from bench.peers.common import parse_args, server_ssl_context

ARGS = parse_args(__doc__)


class Echo(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def get_compression_options(self):
        return {} if ARGS.compression else None

    def on_message(self, message) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


async def main() -> None:
    app = tornado.web.Application([(r"/.*", Echo)], websocket_max_message_size=ARGS.max_size)
    app.listen(ARGS.port, address=ARGS.host, backlog=ARGS.backlog, ssl_options=server_ssl_context(ARGS))
    print("ready", flush=True)
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
