"""The application factory: wires routes and runs the poller in the background."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from exporter.alertpull import AlertPuller
from exporter.api import observability
from exporter.api.auth import auth_middleware
from exporter.api.errors import error_middleware
from exporter.api.keys import (
    ALERT_PULLER,
    DEPLOYER,
    DRIVER,
    MOUNT_POLICY,
    NAMING,
    POLLER,
    REGISTRY,
    REMEDIATION,
    SETTINGS,
)
from exporter.api.routes import add_api_routes
from exporter.api.webauth import add_web_config
from exporter.config import Settings
from exporter.confinement import MountPolicy
from exporter.drivers.base import Driver
from exporter.poller import Poller
from exporter.remediation import Remediator
from exporter.replica_deploy import ReplicaDeployer
from exporter.webconfig import WebConfigWatcher


def create_app(
    *,
    settings: Settings,
    driver: Driver,
    poller: Poller,
    registry: CollectorRegistry,
    api_token: str | None,
    mount_policy: MountPolicy,
    poll_in_background: bool = True,
    deployer: ReplicaDeployer | None = None,
    remediation: Remediator | None = None,
    web_config: WebConfigWatcher | None = None,
    alert_puller: AlertPuller | None = None,
) -> web.Application:
    """Return the exporter's aiohttp application (``exporter.wiring.wire`` builds its parts).

    With ``poll_in_background`` the poller polls for the app's lifetime;
    tests turn it off to drive polls themselves. The driver is closed when
    the app shuts down. The ``/api`` routes need ``api_token``, read once by
    the wiring; without one they answer 403. Replica deploys and remediation
    answer 503 unless their collaborators are given; the app opens and closes
    the remediation's state store. ``mount_policy`` is the deployer's own:
    one lock makes each check-and-create of the API and deploys atomic.
    ``web_config`` adds its basic auth (every route but ``/api``) and headers.
    An ``alert_puller`` (pull mode) polls Alertmanager once remediation is open.
    """
    app = web.Application(
        client_max_size=settings.api_max_body_bytes,
        middlewares=[error_middleware, auth_middleware(api_token)],
    )
    app[SETTINGS] = settings
    app[DRIVER] = driver
    app[POLLER] = poller
    app[REGISTRY] = registry
    app[NAMING] = settings.naming()
    app[MOUNT_POLICY] = mount_policy
    if web_config is not None:
        add_web_config(app, web_config)
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
                    await stack.enter_async_context(poller.running())
                if alert_puller is not None:
                    # Closed first: no hand-over to remediation outlives it.
                    await stack.enter_async_context(alert_puller.running())
                yield
        finally:
            await driver.close()

    app.cleanup_ctx.append(lifecycle)
    return app
