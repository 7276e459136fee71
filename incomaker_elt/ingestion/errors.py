"""What can go wrong talking to the API, as exceptions: apart from the client
(incomaker_elt/ingestion/client.py) so that whoever only catches or raises them, such as the
Dagster definitions' resources and checks, does not import httpx with it."""

from __future__ import annotations


class IngestionError(RuntimeError):
    """A failure the user must act on; the message names the operation and what to do."""


class TokenRejected(IngestionError):
    pass


class RequestRejected(IngestionError):
    """A 4xx other than 401/403: the request itself is wrong (a path, a parameter)."""

    def __init__(self, message: str, status: int = 400, server_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.server_message = server_message

    def __reduce__(self) -> tuple[object, ...]:  # from the client's process, status and all
        return (type(self), (str(self), self.status, self.server_message))


class ApiUnavailable(IngestionError):
    pass


class BrokenBody(ValueError):
    """A 2xx body that does not decode: truncated or malformed. Worth another attempt."""
