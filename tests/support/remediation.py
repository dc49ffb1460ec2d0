"""Two managed containers on the in-memory engine, and reading what remediation did."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from exporter.testing import FakeDriver
from tests.support.api import Api

NAME = "app-abcdef12-000a"

OTHER = "app-abcdef12-000b"

ACT = {"action": "restart", "alertname": "ReplicaSick"}


def fake() -> FakeDriver:
    driver = FakeDriver()
    driver.add(NAME)
    driver.add(OTHER)
    return driver


async def post(api: Api, payload: dict[str, Any], status: int = 200) -> Any:
    got, body = await api.call("POST", "/api/v1/alerts", json=payload)
    assert got == status, body
    return body


def outcomes(body: dict[str, Any]) -> list[str]:
    return [o["outcome"] for o in body["outcomes"]]


def db_path(api: Api) -> Path:
    return api.settings.state_dir / "state.sqlite3"


def count(api: Api, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db_path(api))) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def file_bytes(api: Api) -> int:
    path = db_path(api)
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def sample(api: Api, name: str, **labels: str) -> float | None:
    return api.registry.get_sample_value(name, labels)
