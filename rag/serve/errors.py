"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""
from __future__ import annotations

import re
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError


class ApiError(Exception):
    """An error the client caused (4xx) or the server met (5xx), in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _is_field(part: object) -> bool:
    """A field name or list index, not pydantic's tag of a union member ('str', 'LLMAOptions')."""
    return isinstance(part, int) or (isinstance(part, str) and bool(_FIELD.match(part)) and part not in _TYPE_TAGS)


def from_validation(err: ValidationError) -> ApiError:
    """The first problem pydantic found, naming the parameter (dotted path) as OpenAI does."""
    first = err.errors()[0]
    param = ".".join(str(p) for p in first["loc"] if _is_field(p)) or None
    message = first["msg"]
    if first["type"] == "missing":
        message = f"Missing required parameter: '{param}'."
    elif first["type"] == "extra_forbidden":
        message = f"Unrecognized parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {message}."
    code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
    return ApiError(400, message, param=param, code=code)
