"""``/``, ``/metrics``, ``/healthz`` and ``/readyz``: never touch the engine."""

from __future__ import annotations

import asyncio
import html
import logging
import time

from aiohttp import web

from exporter import __version__
from exporter.api.keys import ALERT_PULLER, POLLER, REGISTRY, REMEDIATION, SETTINGS
from exporter.api.routes import OPENAPI_PATH
from exporter.exposition import Exposition
from exporter.metrics import enabled_rows

log = logging.getLogger(__name__)

EXPOSITION = web.AppKey("exposition", Exposition)


def _wants_openmetrics(accept: str) -> bool:
    # As prometheus_client decides: OpenMetrics when the client lists it at all.
    return any(
        part.split(";")[0].strip() == "application/openmetrics-text" for part in accept.split(",")
    )


def _q_value(params: list[str]) -> float:
    """Return the q of a list element's parameters (1 when absent, 0 when malformed)."""
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def accepts_gzip(accept_encoding: str) -> bool:
    """Return whether an Accept-Encoding value accepts gzip (RFC 9110 12.5.3).

    ``gzip;q=0`` refuses it; without a ``gzip`` element, ``*`` decides.
    """
    gzip_q: float | None = None
    star_q: float | None = None
    for element in accept_encoding.split(","):
        coding, *params = element.split(";")
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            gzip_q = max(gzip_q or 0.0, _q_value(params))
        elif coding == "*":
            star_q = _q_value(params)
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


async def metrics(request: web.Request) -> web.StreamResponse:
    """Serve the exposition in the format Accept asks for, gzipped when accepted."""
    openmetrics = _wants_openmetrics(request.headers.get("Accept", ""))
    gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    # A new snapshot of thousands of containers takes a while to render;
    # keep the loop free for health checks and other scrapes meanwhile.
    body = await asyncio.to_thread(request.app[EXPOSITION].body, openmetrics=openmetrics, gzip=gzip)
    response = web.StreamResponse(headers={"Content-Type": body.content_type})
    if body.gzipped:
        response.headers["Content-Encoding"] = "gzip"
    response.content_length = len(body)
    deadline = request.app[SETTINGS].web_write_timeout
    try:
        async with asyncio.timeout(deadline):
            await response.prepare(request)
            # A plain body inflates as it is written, a piece between writes:
            # about 40 ms of the loop's time for 5,000 containers, in slices under 1 ms.
            for chunk in body.chunks:
                await response.write(chunk)
            await response.write_eof()
    except TimeoutError:
        # The client stopped reading: the headers are gone, so there is no
        # answer left to give. Drop the connection rather than hold it forever.
        log.info("%s did not read /metrics within %gs; connection closed", request.remote, deadline)
        request.protocol.force_close()
    return response


async def healthz(request: web.Request) -> web.Response:
    """Answer 200 while the process serves requests."""
    return web.json_response({"status": "ok"})


def readiness(request: web.Request) -> tuple[bool, dict[str, object]]:
    """Return whether the last poll is fresh and remediation's store works, and why."""
    poller = request.app[POLLER]
    settings = request.app[SETTINGS]
    snapshot = poller.snapshot
    age = time.time() - snapshot.completed_at if snapshot.completed_at else None
    # A poll may take up to its own timeouts on top of the interval.
    fresh_within = 2 * poller.interval + 3 * settings.poll_timeout
    ready = snapshot.engine_up and age is not None and age <= fresh_within
    remediation = request.app.get(REMEDIATION)
    # Remediation's state store failing makes the exporter not ready (its alerts answer 503).
    state_error = None if remediation is None else remediation.state_error
    ready = ready and state_error is None
    # Pull mode with no Alertmanager peer answering: nothing is restarted, and the body (and
    # sysinner_exporter_alertmanager_up) say so, but the exporter stays ready: its metrics
    # flow, and a readiness probe that dropped every exporter of a fleet from its Service
    # for one Alertmanager outage would stall rollouts fleet-wide.
    puller = request.app.get(ALERT_PULLER)
    pull_error = None if puller is None else puller.error
    return ready, {
        "ready": ready,
        "engine_up": snapshot.engine_up,
        "last_poll_age_seconds": None if age is None else round(age, 3),
        "fresh_within_seconds": fresh_within,
        "containers": len(snapshot.containers),
        # Unmanaged containers are not the product; say how many and which flag takes them.
        "unmanaged_left_out": snapshot.unmanaged_left_out,
        **({"include_unmanaged_with": "--collect.all"} if snapshot.unmanaged_left_out else {}),
        "stats_source": poller.stats_source_name,
        "held_files": poller.held_files,
        "held_files_budget": poller.held_files_budget,
        "error": snapshot.error,
        **({} if remediation is None else {"remediation_state_error": state_error}),
        **(
            {}
            if puller is None
            else {"alertmanager_up": puller.up, "alertmanager_error": pull_error}
        ),
    }


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 when ready (see :func:`readiness`), else 503; the body says why either way."""
    ready, doc = readiness(request)
    return web.json_response(doc, status=200 if ready else 503)


def landing_page(telemetry_path: str) -> str:
    """Return the HTML of ``/``: what this is and links to what it serves."""
    links = [
        (telemetry_path, "Metrics", "the Prometheus exposition"),
        ("/healthz", "Health", "200 while the process serves"),
        ("/readyz", "Readiness", "200 when the last poll of the engine succeeded and is fresh"),
        (OPENAPI_PATH, "API document", "OpenAPI 3.1 of the lifecycle API (bearer token)"),
    ]
    items = "\n".join(
        f'<li><a href="{html.escape(href)}">{html.escape(title)}</a>: {html.escape(what)}</li>'
        for href, title, what in links
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        "<title>sysinner-exporter</title></head>\n<body>\n"
        f"<h1>sysinner-exporter</h1>\n<p>Prometheus exporter for Docker hosts running "
        f"sysinner-style apps, version {html.escape(__version__)}.</p>\n"
        f"<ul>\n{items}\n</ul>\n</body>\n</html>\n"
    )


def add_routes(app: web.Application, telemetry_path: str) -> None:
    """Register the observability routes on ``app`` (its poller and registry set first)."""
    settings = app[SETTINGS]
    app[EXPOSITION] = Exposition(
        app[POLLER],
        app[REGISTRY],
        settings.collect_labels,
        with_id=settings.collect_id_label,
        table=enabled_rows(settings.collect_disable),
        series_labels=settings.collect_series_labels,
    )
    page = landing_page(telemetry_path)

    async def landing(request: web.Request) -> web.Response:
        """Answer the landing page."""
        return web.Response(text=page, content_type="text/html")

    if telemetry_path != "/":
        app.router.add_get("/", landing)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
