"""Errors in OpenAI's format, {"error": {"message", "type", "param", "code"}}, for every refusal."""
from __future__ import annotations

from typing import Optional

from starlette.responses import JSONResponse

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
          415: "invalid_request_error", 422: "invalid_request_error", 503: "server_busy",
          500: "server_error"}


class ApiError(Exception):
    """A refusal with its HTTP status and a message meant for the client."""

    def __init__(self, status: int, message: str, code: Optional[str] = None, param: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code, self.param)


def error_response(status: int, message: str, code: Optional[str] = None, param: Optional[str] = None,
                   headers: Optional[dict] = None) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)
