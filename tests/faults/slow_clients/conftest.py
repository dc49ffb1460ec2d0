"""Fixtures of the slow-client tests: the app on a loopback port, a short or a patient deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.slow_http import (
    PATIENT_READ_TIMEOUT,
    READ_TIMEOUT,
    Target,
    serving,
)


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Target]:
    """The app with the short READ_TIMEOUT."""
    async with serving(tmp_path, READ_TIMEOUT) as served:
        yield served


@pytest.fixture
async def patient(tmp_path: Path) -> AsyncIterator[Target]:
    """The app with PATIENT_READ_TIMEOUT, for tests whose requests must not race the deadline."""
    async with serving(tmp_path, PATIENT_READ_TIMEOUT) as served:
        yield served
