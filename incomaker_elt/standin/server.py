"""The stand-in as a real HTTP server: a Starlette app served by uvicorn."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from incomaker_elt.standin.service import StandIn

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def asgi_app(standin: StandIn) -> Starlette:
    async def answer(request: Request) -> Response:
        # Routing is the catalogue's, inside StandIn.handle, so one catch-all route suffices.
        reply = await run_in_threadpool(
            standin.handle,
            request.method,
            request.url.path,
            request.query_params.multi_items(),
            request.headers,
        )
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return Response(
            reply.body,
            status_code=reply.status,
            headers=reply.headers,
            media_type="application/json",
        )

    return Starlette(routes=[Route("/{path:path}", answer, methods=METHODS)])


@contextmanager
def serve(standin: StandIn, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the server in a background thread; yield its base URL; stop it on exit."""
    config = uvicorn.Config(
        asgi_app(standin),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="standin-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(
                f"the stand-in could not start on {host}:{port} (is the port in use?)"
            )
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
