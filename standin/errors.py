"""Errors the API answers with, as Spring-style JSON bodies."""

from __future__ import annotations

from http import HTTPStatus


class ApiError(Exception):
    """An HTTP error response: status, reason phrase, message and (for 400) the parameter."""

    def __init__(self, status: int, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"status": self.status, "error": HTTPStatus(self.status).phrase}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        body["message"] = self.message
        return body


def bad_parameter(parameter: str, message: str) -> ApiError:
    return ApiError(400, message, parameter)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)
