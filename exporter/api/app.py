"""The application factory: wires routes and runs the collector in the background."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from exporter.alertpull import AlertPuller
from exporter.api import observability
from exporter.api.auth import auth_middleware
from exporter.api.errors import error_middleware
from exporter.api.keys import (
    ALERT_PULLER,
    COLLECTOR,
    DEPLOYER,
    DRIVER,
    MOUNT_POLICY,
    NAMING,
    REGISTRY,
    REMEDIATION,
    SETTINGS,
)
from exporter.api.routes import add_api_routes
from exporter.collector import Collector
from exporter.config import Settings
from exporter.confinement import DOCKER_SOCKETS, MountPolicy
from exporter.drivers.base import Driver
from exporter.remediation import Remediator
from exporter.replica_deploy import ReplicaDeployer


def create_app(
    *,
    settings: Settings,
    driver: Driver,
    collector: Collector,
    registry: CollectorRegistry,
    poll_in_background: bool = True,
    api_token: str | None = None,
    deployer: ReplicaDeployer | None = None,
    remediation: Remediator | None = None,
    protected_paths: Sequence[str] = (),
    alert_puller: AlertPuller | None = None,
) -> web.Application:
    """Return the exporter's aiohttp application.

    With ``poll_in_background`` the collector polls for the app's lifetime;
    tests turn it off to drive polls themselves. The driver is closed when
    the app shuts down. The ``/api`` routes need ``api_token`` (default:
    ``settings.api_token``); without one they answer 403. Replica deploys and
    remediation answer 503 unless their collaborators are given; the app
    opens and closes the remediation's state store. ``protected_paths`` are
    files no bind mount may expose (the engine socket, secrets). An
    ``alert_puller`` (pull mode) polls Alertmanager once remediation is open.
    """
    if api_token is None and settings.api_token is not None:
        api_token = settings.api_token.get_secret_value()
    app = web.Application(
        client_max_size=settings.api_max_body_bytes,
        middlewares=[error_middleware, auth_middleware(api_token)],
    )
    app[SETTINGS] = settings
    app[DRIVER] = driver
    app[COLLECTOR] = collector
    app[REGISTRY] = registry
    app[NAMING] = settings.naming()
    app[MOUNT_POLICY] = MountPolicy(
        [str(p) for p in settings.mount_prefixes()],
        protected=[
            *DOCKER_SOCKETS,
            *protected_paths,
            str(settings.state_dir / "state.sqlite3"),
            *([str(settings.api_token_file)] if settings.api_token_file else []),
        ],
    )
    if deployer is not None:
        app[DEPLOYER] = deployer
    if remediation is not None:
        app[REMEDIATION] = remediation
    if alert_puller is not None:
        app[ALERT_PULLER] = alert_puller
    observability.add_routes(app, settings.web_telemetry_path)
    add_api_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        try:
            async with contextlib.AsyncExitStack() as stack:
                if remediation is not None:
                    await remediation.open()
                    stack.push_async_callback(remediation.close)
                if deployer is not None:
                    await deployer.load_existing()
                if poll_in_background:
                    await stack.enter_async_context(collector.running())
                if alert_puller is not None:
                    # Closed first: no hand-over to remediation outlives it.
                    await stack.enter_async_context(alert_puller.running())
                yield
        finally:
            await driver.close()

    app.cleanup_ctx.append(lifecycle)
    return app
