"""picows echo server on uvloop, as picows' own examples and benchmarks run it.

picows has no permessage-deflate: ``--compression`` is refused (the harness marks that variant n/a).
"""

from __future__ import annotations

import sys

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

from bench.peers.common import parse_args, server_ssl_context

ARGS = parse_args(__doc__)
CLOSE = WSMsgType.CLOSE
PING = WSMsgType.PING


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif msg_type != PING and msg_type != WSMsgType.PONG:
            # Frame by frame, fin preserved: fragmented messages come back fragmented the same way.
            transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)


async def main() -> None:
    server = await ws_create_server(
        lambda _request: Echo(),
        ARGS.host,
        ARGS.port,
        backlog=ARGS.backlog,
        ssl=server_ssl_context(ARGS),
        max_frame_size=ARGS.max_size,
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if ARGS.compression:
        sys.exit("picows has no permessage-deflate")
    uvloop.run(main())
