"""Typed application keys shared by the route modules."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from exporter.collector import Collector
from exporter.config import Settings
from exporter.drivers.base import Driver

SETTINGS = web.AppKey("settings", Settings)
DRIVER = web.AppKey("driver", Driver)
COLLECTOR = web.AppKey("collector", Collector)
REGISTRY = web.AppKey("registry", CollectorRegistry)
