"""Fixtures of the fault suite: an HTTP session, and the private engine that may be killed."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.faults.private_engine import PrivateEngine
from tests.support.engine import engine_answers
from tests.support.requirements import require


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """Return a client session with a bounded timeout for the test's own calls."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture(scope="module")
def private_engine() -> Iterator[PrivateEngine]:
    """Return a started private dockerd holding the test image; removed without a trace after."""
    require(
        shutil.which("dockerd") is not None, "dockerd (Debian package docker.io)", needs="engine"
    )
    # The test image is copied from the main engine.
    require(engine_answers(), "the main Docker engine", needs="engine")
    engine = PrivateEngine()
    try:
        engine.start()
        engine.load_image()
        yield engine
    finally:
        problems = engine.teardown()
        assert not problems, f"private engine teardown left: {problems}"
