"""The aiohttp service: metrics, health, and (when a token is set) the lifecycle API."""

from exporter.api.app import create_app

__all__ = ["create_app"]
