"""``/metrics``, ``/healthz`` and ``/readyz``: always open, never touch the engine."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from exporter.api.keys import COLLECTOR, REGISTRY, SETTINGS


async def metrics(request: web.Request) -> web.Response:
    """Render the registry in the format the Accept header asks for, gzip when accepted."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    registry = request.app[REGISTRY]
    # Rendering thousands of containers takes a while; keep the loop free for
    # health checks and other scrapes meanwhile.
    body = await asyncio.to_thread(encoder, registry)
    response = web.Response(body=body, headers={"Content-Type": content_type})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression(web.ContentCoding.gzip)
    return response


async def healthz(request: web.Request) -> web.Response:
    """Answer 200 while the process serves requests."""
    return web.json_response({"status": "ok"})


def readiness(request: web.Request) -> tuple[bool, dict[str, object]]:
    """Return whether the last poll succeeded recently enough, and why."""
    collector = request.app[COLLECTOR]
    settings = request.app[SETTINGS]
    snapshot = collector.snapshot
    age = time.time() - snapshot.completed_at if snapshot.completed_at else None
    # A poll may take up to its own timeouts on top of the interval.
    fresh_within = 2 * collector.interval + 3 * settings.poll_timeout
    ready = snapshot.engine_up and age is not None and age <= fresh_within
    return ready, {
        "ready": ready,
        "engine_up": snapshot.engine_up,
        "last_poll_age_seconds": None if age is None else round(age, 3),
        "fresh_within_seconds": fresh_within,
        "containers": len(snapshot.containers),
        "stats_source": collector.stats_source_name,
        "error": snapshot.error,
    }


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 when the last poll succeeded and is fresh, else 503 with the reason."""
    ready, doc = readiness(request)
    return web.json_response(doc, status=200 if ready else 503)


def add_routes(app: web.Application, telemetry_path: str) -> None:
    """Register the observability routes on ``app``."""
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
