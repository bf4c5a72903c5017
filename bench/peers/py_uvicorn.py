"""uvicorn echo server: one worker, a bare ASGI app, ``ws="websockets"`` (the implementation uvicorn's
``ws="auto"`` picks when websockets is installed), h11 for HTTP and uvloop (uvicorn's ``loop="auto"``).
"""

from __future__ import annotations

import warnings

import uvicorn

from bench.peers.common import parse_args

ARGS = parse_args(__doc__)


async def app(scope, receive, send) -> None:
    if scope["type"] != "websocket":
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes")})


def main() -> None:
    warnings.simplefilter("ignore", DeprecationWarning)
    config = uvicorn.Config(
        app,
        host=ARGS.host,
        port=ARGS.port,
        backlog=ARGS.backlog,
        ws="websockets",
        ws_per_message_deflate=ARGS.compression,
        ws_max_size=ARGS.max_size,
        ws_ping_interval=None,
        lifespan="off",
        log_level="warning",
        access_log=False,
        ssl_certfile=ARGS.certfile or None,
        ssl_keyfile=ARGS.keyfile or None,
        workers=1,
    )
    server = uvicorn.Server(config)
    print("ready", flush=True)  # the harness waits for the port itself
    server.run()


if __name__ == "__main__":
    main()
