"""Bearer-token auth for everything under ``/api``; metrics and health stay open.

Without a token the API is off: every ``/api`` call answers 403 saying how
to turn it on, so an exporter started with defaults exposes no lifecycle
control. With a token, a call must carry ``Authorization: Bearer <token>``;
the comparison is constant-time on bytes (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.api.errors import error_response
from exporter.config import env_name, flag_name

API_PREFIX = "/api"
REALM = "sysinner-exporter"

TURN_ON = (
    f"the lifecycle API is off: set a bearer token with {flag_name('api_token_file')} / "
    f"{env_name('api_token_file')}, or {env_name('api_token')}"
)


def is_api(request: web.Request) -> bool:
    """Return True for any path under /api, routed or not."""
    path = request.path
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        return True
    # Also check what the router matched, in case a path spelling reached an API route.
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    return canonical.startswith(API_PREFIX + "/")


def _bearer(header: str) -> str | None:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def auth_middleware(token: str | None) -> Middleware:
    """Return the middleware guarding ``/api`` with ``token`` (None: the API is off).

    The token is as ``exporter.wiring.read_api_token`` decided it: stripped,
    since a bearer credential cannot carry surrounding whitespace, and never empty.
    """
    expected = token.encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_api(request):
            return await handler(request)
        if expected is None:
            return error_response(403, "lifecycle API disabled", TURN_ON)
        given = _bearer(request.headers.get("Authorization", ""))
        if given is None:
            return error_response(
                401,
                "authentication required",
                "send Authorization: Bearer <token>",
                {"WWW-Authenticate": f'Bearer realm="{REALM}"'},
            )
        try:
            given_bytes = given.encode("utf-8")
        except UnicodeEncodeError:
            given_bytes = b""
        if not hmac.compare_digest(given_bytes, expected):
            return error_response(
                401,
                "invalid token",
                "the bearer token does not match",
                {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
            )
        return await handler(request)

    return middleware
