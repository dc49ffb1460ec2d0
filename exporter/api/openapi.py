"""The API's route table and the OpenAPI 3.1 document built from it.

Routes are registered from the same :class:`Operation` list the document is
built from, so a path, method, body model or status cannot be in one and not
the other. Schemas come from the pydantic models themselves
(``models_json_schema`` with ``#/components/schemas/{model}`` refs): request
models in validation mode, answers in serialization mode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from exporter import __version__
from exporter.api.errors import ErrorBody

REF_TEMPLATE = "#/components/schemas/{model}"

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "malformed request: invalid JSON or UTF-8, or a bad query parameter",
    401: "missing or wrong bearer token",
    403: "the API is off (no token configured), or the policy refuses: "
    "unmanaged container, bind mount outside the allowed prefixes, image not allowed, "
    "vpc networks off (no --api.vpc-subnet-pool)",
    404: "no such container or image",
    408: "request body not received in full within --web.read-timeout; the connection is closed",
    409: "conflict with the container's state, e.g. the name is in use; or a vpc_subnet "
    "overlapping an engine network, or every vpc network the exporter may keep in use",
    413: "request body larger than --api.max-body-bytes",
    415: "request body is not application/json",
    422: "request body fails validation; detail lists each field",
    429: "too many image pulls at once (--api.max-concurrent-pulls); see Retry-After",
    502: "the container engine refused the call (detail has its message)",
    503: "the container engine (or the state database) cannot be reached in time, "
    "or the feature is not configured",
}

#: Every API call can be refused by auth.
AUTH_ERRORS = (401, 403)
#: Every call with a JSON body can fail to arrive in time, parse or validate.
BODY_ERRORS = (400, 408, 413, 415, 422)


@dataclass(frozen=True)
class Param:
    """A query parameter of an operation."""

    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Operation:
    """One route: how it is served and how it is documented."""

    method: Literal["GET", "POST", "DELETE"]
    path: str
    handler: Handler
    operation_id: str
    summary: str
    status: int
    response: type[BaseModel] | None
    errors: tuple[int, ...] = ()
    request: type[BaseModel] | None = None
    query: tuple[Param, ...] = ()
    tag: str = "lifecycle"
    also_ok: tuple[int, ...] = ()
    managed_name: bool = False

    def error_statuses(self) -> list[int]:
        """Return every error status this operation can answer, sorted."""
        statuses = set(AUTH_ERRORS) | set(self.errors)
        if self.request is not None:
            statuses |= set(BODY_ERRORS)
        return sorted(statuses)


def add_routes(app: web.Application, operations: Sequence[Operation]) -> None:
    """Register every operation's handler on ``app``."""
    for op in operations:
        app.router.add_route(op.method, op.path, op.handler, name=op.operation_id)


_PATH_PARAM = re.compile(r"\{(\w+)\}")


def ecma_pattern(python_pattern: str, leading_slash: bool = False) -> str:
    """Return a whole-string ECMA-262 pattern for a naming regex (named groups unnamed)."""
    body = re.sub(r"\(\?P<\w+>", "(", python_pattern)
    return f"^{'/?' if leading_slash else ''}(?:{body})$"


def build_document(
    operations: Sequence[Operation], managed_pattern: str | None = None
) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of ``operations``.

    With ``managed_pattern`` (the naming regex) the names that mutating calls
    accept are documented as the pattern they must match.
    """
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for op in operations:
        if op.request is not None:
            models.append((op.request, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(models)), ref_template=REF_TEMPLATE)
    error_ref = refs[(ErrorBody, "serialization")]

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        name_schema: dict[str, Any] = {"type": "string"}
        if op.managed_name and managed_pattern is not None:
            name_schema["pattern"] = ecma_pattern(managed_pattern)
        params: list[dict[str, Any]] = [
            {
                "name": n,
                "in": "path",
                "required": True,
                "schema": name_schema if n == "name" else {"type": "string"},
            }
            for n in _PATH_PARAM.findall(op.path)
        ]
        params += [
            {"name": q.name, "in": "query", "required": False, "schema": q.schema}
            | {"description": q.description}
            for q in op.query
        ]
        ok: dict[str, Any] = {"description": op.summary}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": refs[(op.response, "serialization")]}}
        responses: dict[str, Any] = {str(status): ok for status in (op.status, *op.also_ok)}
        for status in op.error_statuses():
            responses[str(status)] = {
                "description": ERROR_DESCRIPTIONS[status],
                "content": {"application/json": {"schema": error_ref}},
            }
        doc: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": responses,
        }
        if params:
            doc["parameters"] = params
        if op.request is not None:
            doc["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.request, "validation")]}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = doc

    schemas = defs.get("$defs", {})
    create = schemas.get("ContainerCreateOptions")
    if managed_pattern is not None and create is not None:
        # Create accepts managed names only (a leading "/" is the engine's and is dropped).
        create["properties"]["name"]["pattern"] = ecma_pattern(managed_pattern, leading_slash=True)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sysinner-exporter lifecycle API",
            "version": __version__,
            "description": "Lifecycle of managed containers, replica deploys and "
            "Alertmanager-driven remediation. Every call needs a bearer token; "
            "mutating calls act only on managed containers.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
