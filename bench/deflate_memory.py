"""Server RSS per idle permessage-deflate connection, for a few compression settings.

For each setting this starts a real server (``python -m wsserver serve -c <tmp toml>``, one worker,
127.0.0.1 only, metrics and admin off), warms it up with a few connections, then opens ``--conns``
connections that offer permessage-deflate the way python-websockets' client and browsers do by
default (``permessage-deflate; client_max_window_bits``). Each connection sends ``--messages`` text
messages of ``--size`` bytes, reads each echo (the server compresses it), and is then held idle. The
figure is the growth of VmRSS summed over the master and its workers, divided by the connections.
The server is stopped by its PID (SIGTERM) after each setting.

``--client websockets`` (default) is the python-websockets client: it compresses what it sends, so
the server holds both an inflater and a compressor. ``--client raw`` writes the upgrade and one
*uncompressed* frame itself, as the bench harness's idle-deflate scenario does (bench/loadgen/
raw_client.py): the server then holds only its compressor. ``--offer bare`` offers plain
``permessage-deflate`` instead (no client_max_window_bits, as some browsers do): the server may not
bound the client's window then, so its inflater keeps a 32 KiB window.

The ratio columns are compressed / original size of 200 messages of ``--size`` bytes compressed
in-process with that setting's window and memLevel and context takeover (``off``: 1): ``json`` for
messages like the ones sent, ``text`` for consecutive slices of wsserver's own source.

    .venv/bin/python bench/deflate_memory.py                      # the default grid, 1000 connections
    .venv/bin/python bench/deflate_memory.py --client raw --size 32
    .venv/bin/python bench/deflate_memory.py --size 65536         # windows filled by a large echo
    .venv/bin/python bench/deflate_memory.py --settings off,15/15/8,12/12/5

A setting is ``off`` (compression = false), ``default`` (no compression_* keys: the port defaults), or
``W/C/M``: compression_window_bits, compression_client_window_bits, compression_mem_level.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory  # noqa: E402

from bench.procfs import tree_rss_kib  # noqa: E402
from wsserver.protocol.deflate import DEFAULT_MEM_LEVEL, DEFAULT_WINDOW_BITS  # noqa: E402

DEFAULT_SETTINGS = "off,default,15/15/8,12/12/5,12/12/4,12/12/3,11/11/5,11/11/4,10/10/4"
WARMUP = 50
CONCURRENCY = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(port: int, setting: str) -> str:
    lines = [
        "[server]",
        "workers = 1",
        "graceful_timeout = 2",
        'log_level = "warning"',
        "",
        "[metrics]",
        "enabled = false",
        "",
        "[admin]",
        "enabled = false",
        "",
        "[[endpoints]]",
        'path = "/echo"',
        'handler = "wsserver.endpoints.echo:Echo"',
        "",
        "[[ports]]",
        'alias = "deflate_memory"',
        f"port = {port}",
        'bind = "127.0.0.1"',
        "idle_timeout_ms = 0",
        "ping_interval_ms = 0",
        "max_connections = 0",
        f"compression = {'false' if setting == 'off' else 'true'}",
    ]
    if setting not in ("off", "default"):
        window, client_window, mem_level = (int(part) for part in setting.split("/"))
        lines += [
            f"compression_window_bits = {window}",
            f"compression_client_window_bits = {client_window}",
            f"compression_mem_level = {mem_level}",
        ]
    return "\n".join(lines) + "\n"


def start_server(workdir: Path, setting: str) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    config = workdir / "wsserver.toml"
    config.write_text(config_text(port, setting))
    log = workdir / "server.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsserver", "serve", "-c", str(config)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port, log
        except OSError:
            time.sleep(0.1)
    stop_server(proc)
    raise TimeoutError(f"server not listening after 20 s:\n{log.read_text(errors='replace')}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def payload(size: int, seed: int) -> str:
    """Text that compresses about as well as JSON does (a few words, repeated in random order)."""
    rng = random.Random(seed)
    words = ["user", "id", "status", "ok", "value", "items", "name", "time", "event", "data", "message"]
    parts, total = [], 0
    while total < size:
        word = f'"{rng.choice(words)}":{rng.randrange(100000)},'
        parts.append(word)
        total += len(word)
    return "".join(parts)[:size]


async def open_connections(url: str, count: int, messages: int, size: int, offer: str) -> tuple[list, int]:
    conns: list = []
    negotiated = 0
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        nonlocal negotiated
        async with limit:
            # python-websockets' default offer is "permessage-deflate; client_max_window_bits" (memLevel 5).
            bits: int | bool | None = True if offer == "default" else None
            factory = ClientPerMessageDeflateFactory(
                client_max_window_bits=bits, compress_settings={"memLevel": 5}
            )
            ws = await connect(url, ping_interval=None, max_size=None, open_timeout=30, extensions=[factory])
            conns.append(ws)
            if ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate"):
                negotiated += 1
            for j in range(messages):
                text = payload(size, i * 1000 + j)
                await ws.send(text)
                if await ws.recv() != text:
                    raise RuntimeError("echo mismatch")

    await asyncio.gather(*(one(i) for i in range(count)))
    return conns, negotiated


class RawConnection:
    """Upgrade with the default offer, send one uncompressed masked text frame, read the echo, hold."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, negotiated: bool) -> None:
        self.reader, self.writer, self.negotiated = reader, writer, negotiated

    @classmethod
    async def open(cls, port: int, offer: str) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        extension = (
            "permessage-deflate; client_max_window_bits" if offer == "default" else "permessage-deflate"
        )
        writer.write(
            (
                f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Extensions: {extension}\r\n\r\n"
            ).encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        if not head.startswith(b"http/1.1 101"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1"))
        return cls(reader, writer, b"permessage-deflate" in head)

    async def echo(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        if len(data) < 126:
            header = bytes((0x81, 0x80 | len(data)))
        elif len(data) < 65536:
            header = bytes((0x81, 0x80 | 126)) + len(data).to_bytes(2, "big")
        else:
            header = bytes((0x81, 0x80 | 127)) + len(data).to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.writer.write(header + mask + masked)
        first = await self.reader.readexactly(2)
        length = first[1] & 0x7F
        if length >= 126:
            length = int.from_bytes(await self.reader.readexactly(2 if length == 126 else 8), "big")
        await self.reader.readexactly(length)  # the echo, compressed by the server: not checked here

    async def close(self) -> None:
        self.writer.close()


async def open_raw(port: int, count: int, messages: int, size: int, offer: str) -> tuple[list, int]:
    conns: list[RawConnection] = []
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with limit:
            conn = await RawConnection.open(port, offer)
            conns.append(conn)
            for j in range(messages):
                await conn.echo(payload(size, i * 1000 + j))

    await asyncio.gather(*(one(i) for i in range(count)))
    return conns, sum(conn.negotiated for conn in conns)


async def close_all(conns: list) -> None:
    await asyncio.gather(*(conn.close() for conn in conns), return_exceptions=True)


def ratio(setting: str, size: int, corpus: str) -> float:
    """compressed / original for 200 messages through one compressor (context takeover).

    ``json``: messages like the ones sent; ``text``: consecutive slices of wsserver's own source.
    """
    if setting == "off":
        return 1.0
    if setting == "default":
        window, mem_level = DEFAULT_WINDOW_BITS, DEFAULT_MEM_LEVEL
    else:
        window, mem_level = int(setting.split("/")[0]), int(setting.split("/")[2])
    source = b"".join(path.read_bytes() for path in sorted((REPO / "wsserver").rglob("*.py")))
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window, mem_level)
    original = compressed = 0
    for i in range(200):
        if corpus == "json":
            data = payload(size, 10_000_000 + i).encode()
        else:
            start = i * size % (len(source) - size)
            data = source[start : start + size]
        original += len(data)
        compressed += len(compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)) - 4
    return compressed / original


async def measure(setting: str, args: argparse.Namespace) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory(prefix="deflate-memory-") as tmp:
        proc, port, _ = start_server(Path(tmp), setting)
        try:
            url = f"ws://127.0.0.1:{port}/echo"

            async def opened(count: int) -> tuple[list, int]:
                if args.client == "raw":
                    return await open_raw(port, count, args.messages, args.size, args.offer)
                return await open_connections(url, count, args.messages, args.size, args.offer)

            warm, _ = await opened(WARMUP)
            await close_all(warm)
            await asyncio.sleep(args.settle)
            before = tree_rss_kib(proc.pid)
            conns, negotiated = await opened(args.conns)
            await asyncio.sleep(args.settle)
            after = tree_rss_kib(proc.pid)
            await close_all(conns)
        finally:
            stop_server(proc)
    return (after - before) / args.conns, before, negotiated


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conns", type=int, default=1000, help="idle connections per setting (default 1000)")
    parser.add_argument("--messages", type=int, default=1, help="echoes per connection before it idles")
    parser.add_argument("--size", type=int, default=200, help="bytes per message (default 200)")
    parser.add_argument(
        "--settings", default=DEFAULT_SETTINGS, help=f"comma-separated (default {DEFAULT_SETTINGS})"
    )
    parser.add_argument(
        "--client",
        choices=("websockets", "raw"),
        default="websockets",
        help="websockets: compressed both ways; raw: uncompressed frames from the client",
    )
    parser.add_argument(
        "--offer",
        choices=("default", "bare"),
        default="default",
        help='default: "permessage-deflate; client_max_window_bits"; bare: "permessage-deflate"',
    )
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading RSS")
    args = parser.parse_args()
    if not 1 <= args.conns <= 5000:
        parser.error("--conns must be 1..5000")
    offer = "permessage-deflate" + ("; client_max_window_bits" if args.offer == "default" else "")
    print(
        f"{args.conns} connections, {args.messages} echo(es) of {args.size} B each, {args.client} client, "
        f"offer: {offer}"
    )
    print(
        f"{'setting W/C/M':<14} {'KiB/conn':>9} {'RSS before KiB':>15} {'deflate':>8} {'json ratio':>10} "
        f"{'text ratio':>10}"
    )
    for setting in args.settings.split(","):
        setting = setting.strip()
        per_conn, before, negotiated = await measure(setting, args)
        print(
            f"{setting:<14} {per_conn:>9.1f} {before:>15} {negotiated:>8} "
            f"{ratio(setting, args.size, 'json'):>10.3f} {ratio(setting, args.size, 'text'):>10.3f}",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
