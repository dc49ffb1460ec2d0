"""Fixtures of the hostile-input tests: the API on a recording fake engine, a client to reach it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from exporter.config import Settings
from tests.faults.hostile import (
    MANAGED,
    MAX_BODY,
    UNMANAGED,
    RecordingDriver,
    Target,
)
from tests.support.api import Api
from tests.support.api import settings_for as make_settings


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    """Return settings with a small body limit, the pod base made."""
    settings = make_settings(tmp_path, api_max_body_bytes=MAX_BODY)
    settings.pod_base_dir.mkdir(parents=True)
    return settings


@pytest.fixture
def api_driver() -> RecordingDriver:
    """Return a recording engine holding one managed and one unmanaged container."""
    driver = RecordingDriver()
    driver.add(MANAGED)
    driver.add(UNMANAGED)
    return driver


@pytest.fixture
async def target(api: Api, api_driver: RecordingDriver) -> AsyncIterator[Target]:
    """The ``api`` fixture's loopback server, reached by a client of the test's own."""
    port = api.client.port
    async with aiohttp.ClientSession() as http:
        yield Target(f"http://127.0.0.1:{port}", port, api_driver, http, api.settings)
