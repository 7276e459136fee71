"""A record of every request the stand-in answered, for tests to inspect."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    params: dict[str, str]
    status: int


class RequestLog(list[RequestRecord]):
    """Requests in the order they were answered. The server answers on several threads; a
    list's append, clear and copy are each atomic in CPython, so they need no lock."""

    def snapshot(self) -> list[RequestRecord]:
        return list(self)


request_log = RequestLog()
"""Every request answered by any StandIn in this process."""

clear_log = request_log.clear
