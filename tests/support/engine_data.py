"""The engine's recorded answers under tests/data/engine."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data" / "engine"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()
