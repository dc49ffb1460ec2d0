"""Integers past the engine's are a 422 naming the field (issue 12 item 14)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.hardening import EngineApi

pytestmark = pytest.mark.engine


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("memory_limit", {"memory_limit": 2**63}),
        ("cpu_limit", {"cpu_limit": 2**63 // 1_000_000 + 1}),
        ("memory_limit", {"memory_limit": 2**70}),
    ],
)
async def test_integers_past_the_engine_are_422_naming_the_field(
    api: EngineApi, field: str, options: dict[str, Any]
) -> None:
    status, body = await api.create(**options)
    assert status == 422, body
    assert body["detail"][0]["field"] == field
