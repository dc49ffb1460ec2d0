"""Every ``/api/v1`` operation in one table, and the OpenAPI document served from it."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import RootModel

from exporter.api import lifecycle, remediation
from exporter.api.keys import NAMING
from exporter.api.lifecycle import V1
from exporter.api.openapi import Operation, add_routes, build_document

OPENAPI_PATH = f"{V1}/openapi.json"


class OpenApiDocument(RootModel[dict[str, Any]]):
    """The OpenAPI 3.1 document of the lifecycle API."""


async def _placeholder(request: web.Request) -> web.Response:
    raise web.HTTPInternalServerError  # replaced in add_api_routes


def operations() -> tuple[Operation, ...]:
    """Return every API operation, the OpenAPI document's own included."""
    doc_op = Operation(
        "GET",
        OPENAPI_PATH,
        _placeholder,
        "getOpenApi",
        "this document",
        200,
        OpenApiDocument,
        tag="meta",
    )
    return (*lifecycle.OPERATIONS, *remediation.OPERATIONS, doc_op)


def add_api_routes(app: web.Application) -> None:
    """Register every API operation and the OpenAPI document on ``app``."""
    ops = operations()
    document = build_document(ops, managed_pattern=app[NAMING].pattern)

    async def openapi(request: web.Request) -> web.Response:
        """Return the OpenAPI document."""
        return web.json_response(document)

    add_routes(
        app,
        [
            Operation(**{**op.__dict__, "handler": openapi}) if op.path == OPENAPI_PATH else op
            for op in ops
        ],
    )
