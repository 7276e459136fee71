"""Errors the API answers with: the vendor's `{"error": "..."}` body (Commons v4), with the
offending parameter beside it for a 400."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error response: status, reason phrase, message and (for 400) the parameter."""

    def __init__(self, status: int, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.message}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return body


def bad_parameter(parameter: str, message: str) -> ApiError:
    return ApiError(400, message, parameter)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)
