"""Fixtures of the newcomer tests: exporters started as a user starts them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.newcomer.support import Exporter


@pytest.fixture
def exporters(tmp_path: Path) -> Iterator[Callable[..., Exporter]]:
    """Return a factory of started exporters; each is stopped afterwards."""
    started: list[Exporter] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> Exporter:
        exporter = Exporter(args, tmp_path / f"exporter-{len(started)}.log", dict(env or {}))
        started.append(exporter)
        return exporter.start()

    try:
        yield start
    finally:
        for exporter in started:
            exporter.stop()
