"""The web config's basic auth and headers, on every route but ``/api``.

The exporter-toolkit asks for basic auth on every route. ``/api`` is the one
exception here: it already needs the bearer token in the same
``Authorization`` header, and a request carries one such header, so a
client (Alertmanager's webhook among them) could not send both. On ``/api``
the bearer token is the credential, checked by :mod:`exporter.api.auth`;
TLS, when configured, covers ``/api`` like every other route.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.api.auth import is_api
from exporter.api.errors import error_response
from exporter.webconfig import WebConfigWatcher

REALM = "sysinner-exporter"


def web_config_middleware(watcher: WebConfigWatcher) -> Middleware:
    """Return the middleware asking for basic auth as the web config in force says."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        config = watcher.current()
        if config.users and not is_api(request):
            header = request.headers.get("Authorization", "")
            # bcrypt is slow on purpose (tens of ms): off the loop.
            user = await asyncio.to_thread(watcher.check_basic, header) if header else None
            if user is None:
                return error_response(
                    401,
                    "authentication required",
                    "send HTTP basic auth of a user of the web config file",
                    {"WWW-Authenticate": f'Basic realm="{REALM}"'},
                )
        return await handler(request)

    return middleware


def add_web_config(app: web.Application, watcher: WebConfigWatcher) -> None:
    """Guard ``app`` with the web config's basic auth and add its headers to every answer."""
    app.middlewares.append(web_config_middleware(watcher))

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in watcher.current().headers.items():
            response.headers.setdefault(name, value)

    app.on_response_prepare.append(add_headers)
