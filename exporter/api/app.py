"""The application factory: wires routes and runs the collector in the background."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from exporter.api import observability
from exporter.api.keys import COLLECTOR, DRIVER, REGISTRY, SETTINGS
from exporter.collector import Collector
from exporter.config import Settings
from exporter.drivers.base import Driver


def create_app(
    *,
    settings: Settings,
    driver: Driver,
    collector: Collector,
    registry: CollectorRegistry,
    poll_in_background: bool = True,
) -> web.Application:
    """Return the exporter's aiohttp application.

    With ``poll_in_background`` the collector polls for the app's lifetime;
    tests turn it off to drive polls themselves. The driver is closed when
    the app shuts down.
    """
    app = web.Application()
    app[SETTINGS] = settings
    app[DRIVER] = driver
    app[COLLECTOR] = collector
    app[REGISTRY] = registry
    observability.add_routes(app, settings.web_telemetry_path)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        try:
            if poll_in_background:
                async with collector.running():
                    yield
            else:
                yield
        finally:
            await driver.close()

    app.cleanup_ctx.append(lifecycle)
    return app
