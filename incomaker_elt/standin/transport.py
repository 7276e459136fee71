"""The stand-in inside the test process: an httpx transport, no socket."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from incomaker_elt.standin.service import StandIn


def in_process_transport(standin: StandIn) -> httpx.BaseTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        reply = standin.handle(
            request.method, request.url.path, request.url.params.multi_items(), request.headers
        )
        if reply.delay:
            # A slow answer really takes that long; client read timeouts only fire over a socket
            # (use StandIn.serve), since this transport has no timeout of its own.
            time.sleep(reply.delay)
        headers = {"Content-Type": "application/json", **reply.headers}
        return httpx.Response(reply.status, headers=headers, content=reply.body)

    return httpx.MockTransport(handler)
