"""aiohttp echo server (web.WebSocketResponse) on the stock asyncio loop."""

from __future__ import annotations

from aiohttp import WSMsgType, web

from bench.peers.common import parse_args, server_ssl_context

ARGS = parse_args(__doc__)


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=ARGS.compression, max_msg_size=ARGS.max_size)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def main() -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    web.run_app(
        app,
        host=ARGS.host,
        port=ARGS.port,
        backlog=ARGS.backlog,
        ssl_context=server_ssl_context(ARGS),
        access_log=None,
        print=lambda *_: print("ready", flush=True),
    )


if __name__ == "__main__":
    main()
