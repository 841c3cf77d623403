"""Errors in the shape OpenAI's clients expect: `{"error": {message, type, param, code}}`.

The official clients map the HTTP status to an exception class (400 BadRequestError, 404
NotFoundError, 429 RateLimitError, 5xx InternalServerError) and show `message`; `param` names
the field at fault, so a user sees which header, field or line to fix.
"""

from __future__ import annotations

import math
from typing import Final

from aiohttp import web

_TYPES: Final = {
    400: "invalid_request_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    502: "upstream_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """A request the gateway answers with an error; `param` names the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        *,
        kind: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind or _TYPES.get(status, "server_error")
        self.code = code
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def error_response(error: ApiError) -> web.Response:
    """The JSON answer for `error`, with Retry-After (whole seconds) when it has one."""
    response = web.json_response(error.body(), status=error.status)
    if error.retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return response
