"""Serve recorded page bodies again, byte for byte, at next to no cost: the API as seen from a
client whose server runs on another machine.

    .venv/bin/python bench/replay.py FOLDER [--port 0]

FOLDER holds `answers.json` (`{"<path>?<query>": "<file>"}`, the request target exactly as the
client sent it) and the body files it names; bench/ingest.py writes both. Every body is read
into memory before the server says `serving http://127.0.0.1:<port>`; a request for a target
that was not recorded gets 404 with the target in its body, so a run that asks for something
else fails loudly instead of being timed.

Why not the stand-in: it renders every page from its world on request, ~4 ms of CPU a page at
`large`, on the same cores as the pipeline being measured. A real Incomaker server is not on
our cores. This server answers from a dict over asyncio streams, one coroutine per connection,
keep-alive, nothing else: what it costs is what any HTTP server costs to send bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

ANSWERS = "answers.json"
"""The index a replay folder holds: request target -> body file (relative to the folder)."""


def load_answers(folder: Path) -> dict[bytes, bytes]:
    """Request target -> the whole HTTP response (head and body), ready to write."""
    index = json.loads((folder / ANSWERS).read_text())
    responses = {}
    for target, name in index.items():
        body = (folder / name).read_bytes()
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        responses[target.encode()] = head.encode() + body
    return responses


def not_recorded(target: bytes) -> bytes:
    body = b"not recorded: " + target
    return (
        b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def serve(responses: dict[bytes, bytes], port: int) -> None:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                writer.write(responses.get(target) or not_recorded(target))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port, limit=1 << 20)
    bound = server.sockets[0].getsockname()[1]
    print(f"serving http://127.0.0.1:{bound} ({len(responses):,} recorded answers)", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    responses = load_answers(args.folder)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(responses, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
