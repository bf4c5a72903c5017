"""python-websockets echo server on its asyncio implementation and the stock asyncio loop."""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import serve

from bench.peers.common import parse_args, server_ssl_context


async def echo(ws) -> None:
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    args = parse_args(__doc__)
    async with serve(
        echo,
        args.host,
        args.port,
        compression="deflate" if args.compression else None,
        max_size=args.max_size,
        ping_interval=None,
        ssl=server_ssl_context(args),
        backlog=args.backlog,
    ):
        print("ready", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
