"""Fixtures of issue 12's hardening tests: the app on the real engine, with its own vpc pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.api import ClientFactory
from tests.support.hardening import (
    EngineApi,
    make_api,
)


@pytest.fixture
async def api(
    aiohttp_client: ClientFactory, tmp_path: Path, engine: None
) -> AsyncIterator[EngineApi]:
    async with make_api(aiohttp_client, tmp_path) as a:
        yield a
