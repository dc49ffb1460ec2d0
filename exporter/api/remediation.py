"""``/api/v1/alerts`` (Alertmanager's webhook) and the remediation state routes."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field, RootModel

from exporter.api.errors import ApiError, parse_body
from exporter.api.keys import NAMING, REMEDIATION
from exporter.api.lifecycle import V1
from exporter.api.openapi import Operation, Param
from exporter.confinement import check_managed
from exporter.remediation import AlertmanagerWebhook, AlertsResult, Remediator
from exporter.state import DecisionRecord

#: Most decisions one history call returns.
HISTORY_MAX = 1000


class History(RootModel[list[DecisionRecord]]):
    """Remediation decisions, newest first."""


class Quarantined(BaseModel):
    """A container remediation will not restart, and until when."""

    name: str
    until: float = Field(description="unix seconds")


class QuarantineList(RootModel[list[Quarantined]]):
    """Every container quarantined now."""


class QuarantineCleared(BaseModel):
    """The quarantine (if any) is lifted and the restart budget starts afresh."""

    name: str
    was_quarantined: bool


def _remediation(request: web.Request) -> Remediator:
    remediation = request.app.get(REMEDIATION)
    if remediation is None:
        raise ApiError(
            503,
            "remediation is not configured",
            "start the exporter with serve (it needs a state dir)",
        )
    return remediation


def _json(model: BaseModel) -> web.Response:
    return web.json_response(model.model_dump(mode="json"))


async def post_alerts(request: web.Request) -> web.Response:
    """Judge each alert of an Alertmanager webhook payload; answer every alert's outcome."""
    payload = await parse_body(request, AlertmanagerWebhook)
    return _json(await _remediation(request).handle(payload))


async def history(request: web.Request) -> web.Response:
    """Return recent decisions, newest first (``?limit=``, ``?container=``)."""
    raw = request.query.get("limit", "100")
    if not raw.isdecimal() or not 1 <= int(raw) <= HISTORY_MAX:
        raise ApiError(400, f"query parameter limit: {raw!r} is not an integer 1..{HISTORY_MAX}")
    container = request.query.get("container")
    return _json(History(await _remediation(request).history(int(raw), container)))


async def list_quarantined(request: web.Request) -> web.Response:
    """Return the containers quarantined now."""
    current = _remediation(request).quarantined()
    return _json(QuarantineList([Quarantined(name=n, until=u) for n, u in sorted(current.items())]))


async def clear_quarantine(request: web.Request) -> web.Response:
    """Lift a managed container's quarantine and restart its budget."""
    name = request.match_info["name"]
    check_managed(name, request.app[NAMING].is_valid(name))
    was = await _remediation(request).clear_quarantine(name)
    return _json(QuarantineCleared(name=name, was_quarantined=was))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        f"{V1}/alerts",
        post_alerts,
        "postAlerts",
        "Alertmanager webhook (version 4): each alert's outcome",
        200,
        AlertsResult,
        (503,),
        request=AlertmanagerWebhook,
        tag="remediation",
    ),
    Operation(
        "GET",
        f"{V1}/remediation/history",
        history,
        "remediationHistory",
        "recent remediation decisions, newest first",
        200,
        History,
        (400, 503),
        query=(
            Param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": HISTORY_MAX, "default": 100},
                f"how many decisions, 1..{HISTORY_MAX} (default 100)",
            ),
            Param("container", {"type": "string"}, "only this container's decisions"),
        ),
        tag="remediation",
    ),
    Operation(
        "GET",
        f"{V1}/remediation/quarantine",
        list_quarantined,
        "listQuarantined",
        "containers quarantined now",
        200,
        QuarantineList,
        (503,),
        tag="remediation",
    ),
    Operation(
        "DELETE",
        f"{V1}/remediation/quarantine/{{name}}",
        clear_quarantine,
        "clearQuarantine",
        "lift a container's quarantine and restart its budget",
        200,
        QuarantineCleared,
        (503,),
        tag="remediation",
        managed_name=True,
    ),
)
