"""Every error the service answers is JSON ``{"error": ..., "detail": ...}``.

The middleware here is the one place exceptions become statuses: the
driver's errors (404 not found, 409 conflict, 503 engine unreachable or too
slow, 502 anything else the engine refused), pydantic's (422, naming each
field), the confinement policy's (403), aiohttp's own (400, 404, 405, 413,
...) and, last, anything unexpected: 500 with a generic message and the
traceback in the log, never the traceback in the answer. Request bodies are
read through :func:`read_body`, under a deadline (408, and the connection is
closed), and parsed by :func:`parse_body`, which tells malformed JSON (400),
a wrong content type (415) and invalid content (422) apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.api.keys import SETTINGS
from exporter.config import flag_name
from exporter.confinement import Forbidden
from exporter.errors import (
    BusyError,
    ConflictError,
    DriverError,
    DriverTimeoutError,
    EngineUnreachableError,
    NotFoundError,
    PolicyRefusedError,
)
from exporter.state import StateError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

JSON_TYPES = ("application/json",)


class FieldError(BaseModel):
    """One invalid field of a request body."""

    field: str = Field(description="the field's path, parts joined with '.'; '' for the body")
    message: str
    type: str = Field(description="pydantic's error type, e.g. missing, string_type")


class ErrorBody(BaseModel):
    """Every error answer of the service."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="what went wrong, in one line")
    detail: Any = Field(
        default=None, description="more: field errors (422), limits (413), the engine's message"
    )


class ApiError(Exception):
    """An error answer a handler raises: status, one-line error, optional detail.

    With ``close`` the connection is closed once the answer is sent.
    """

    def __init__(
        self,
        status: int,
        error: str,
        detail: object = None,
        headers: Mapping[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})
        self.close = close


def error_response(
    status: int, error: str, detail: object = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Return the JSON error answer."""
    return web.json_response(
        {"error": error, "detail": detail}, status=status, headers=dict(headers or {})
    )


def field_errors(e: ValidationError) -> list[dict[str, str]]:
    """Return pydantic's errors as {field, message, type}, the location joined with '.'."""
    return [
        {
            "field": ".".join(str(part) for part in err["loc"]),
            "message": err["msg"],
            "type": err["type"],
        }
        for err in e.errors(include_url=False, include_context=False, include_input=False)
    ]


def validation_error(e: ValidationError) -> ApiError:
    """Return the 422 for a validation failure; its error names the first bad field."""
    errors = field_errors(e)
    first = errors[0] if errors else {"field": "", "message": "invalid"}
    where = first["field"] or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ApiError(422, f"invalid {where}: {first['message']}{more}", errors)


async def read_body(request: web.Request) -> bytes:
    """Return the whole request body; ApiError 408 if it is not in by --web.read-timeout.

    aiohttp waits for a body as long as the client keeps the connection open,
    so a client that declares a body and trickles it, or never sends it,
    would hold a connection and a handler for good. Every handler that reads
    a body reads it here.
    """
    seconds = request.app[SETTINGS].web_read_timeout
    try:
        async with asyncio.timeout(seconds):
            return await request.read()  # HTTPRequestEntityTooLarge past client_max_size
    except TimeoutError as e:
        # Close: the rest of the body may still be on its way, and there is
        # no telling where the next request would start.
        raise ApiError(
            408,
            f"request body not received within {seconds:g} s",
            {"timeout_seconds": seconds, "setting": flag_name("web_read_timeout")},
            close=True,
        ) from e


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Return the request body as ``model``; ApiError 400/408/413/415/422 otherwise.

    Validation is strict, as JSON Schema is: "5" is not an integer here.
    """
    ctype = request.content_type
    # aiohttp reports a missing Content-Type as application/octet-stream.
    if request.headers.get("Content-Type") and not (ctype in JSON_TYPES or ctype.endswith("+json")):
        raise ApiError(
            415, f"unsupported content type {ctype!r}", "send Content-Type: application/json"
        )
    raw = await read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "request body is not valid UTF-8", str(e)) from e
    if not text.strip():
        raise ApiError(400, "request body is empty", "send a JSON object")
    try:
        json.loads(text)
    except ValueError as e:
        raise ApiError(400, "request body is not valid JSON", str(e)) from e
    except RecursionError as e:
        # The json module recurses per nesting level: ~1000 "[" in a 2 kB body.
        raise ApiError(400, "request body is nested too deeply", str(e)) from e
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as e:
        raise validation_error(e) from e


def _from_exception(e: Exception) -> ApiError | None:
    """Return the answer for a known exception, or None for an unexpected one."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, ValidationError):
        return validation_error(e)
    if isinstance(e, Forbidden):
        return ApiError(403, str(e))
    if isinstance(e, BusyError):
        return ApiError(429, "too many requests", e.message, {"Retry-After": str(e.retry_after)})
    if isinstance(e, PolicyRefusedError):
        return ApiError(
            e.status,
            f"invalid {e.field}: {e.message}",
            [{"field": e.field, "message": e.message, "type": "policy"}],
        )
    if isinstance(e, NotFoundError):
        return ApiError(404, "not found", e.message)
    if isinstance(e, ConflictError):
        return ApiError(409, "conflict", e.message)
    if isinstance(e, EngineUnreachableError | DriverTimeoutError):
        return ApiError(503, "container engine unavailable", e.message)
    if isinstance(e, DriverError):
        # The engine's 400 is the caller's bad input that our validation let through.
        status = 400 if e.status == 400 else 502
        return ApiError(status, "the container engine refused", e.message)
    if isinstance(e, StateError):
        return ApiError(503, "state database unavailable", str(e))
    return None


def _from_http(request: web.Request, e: web.HTTPException) -> web.Response:
    """Return aiohttp's own error as a JSON error, keeping its headers (Allow, ...)."""
    headers = {
        k: v for k, v in e.headers.items() if k.lower() not in ("content-type", "content-length")
    }
    detail: object = None
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        detail = {"max_bytes": request.app[SETTINGS].api_max_body_bytes, "message": e.text}
        return error_response(413, "request body too large", detail, headers)
    if isinstance(e, web.HTTPMethodNotAllowed):
        detail = {"allowed": sorted(e.allowed_methods)}
    return error_response(e.status, (e.reason or "error").lower(), detail, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error as JSON; log unexpected ones with their traceback."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _from_http(request, e)
    except ConnectionResetError:
        # The client hung up mid-request. Raised on, aiohttp would log a
        # traceback per dropped client, which anyone could use to flood the
        # log; an answer to a closed connection is dropped quietly instead.
        log.debug("%s hung up during %s %s", request.remote, request.method, request.path)
        return error_response(400, "client closed the connection")
    except Exception as e:
        known = _from_exception(e)
        if known is None:
            log.exception("unexpected error in %s %s", request.method, request.path)
            return error_response(500, "internal error", "the exporter's log has the details")
        response = error_response(known.status, known.error, known.detail, known.headers)
        if known.close:
            await _send_and_close(request, response)
        return response


async def _send_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``response`` now, then close the connection without reading the rest of the body."""
    response.force_close()  # "Connection: close"
    # A client that has gone already gets nothing; closing is all there is to do.
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    # Otherwise aiohttp lingers, reading what is left of the body for up to
    # its lingering time. The transport still sends what is buffered first.
    request.protocol.force_close()
