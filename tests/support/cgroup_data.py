"""Facts about the recorded cgroup trees under tests/data/cgroup, for the tests that read them."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "cgroup"
#: The v1 tree was recorded from a real container; its id and pid are in container.json.
V1_DOC = json.loads((DATA / "v1" / "container.json").read_text())
V1_ID: str = V1_DOC["id"]
V1_PID: int = V1_DOC["pid"]
#: The v2 tree holds two containers: one under the systemd driver's layout...
V2_SYSTEMD_ID = "3b8f0c6e5d2a41f7a9e0c4b1d6f28e7a5c3b9d0e1f2a4b6c8d0e2f4a6b8c0d2e"
V2_SYSTEMD_PID = 4321
#: ...and one under cgroupfs' layout, whose net/dev is the host's (host networking).
V2_CGROUPFS_ID = "c7d1e9a0b3f54e6d8a2c1b0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
V2_CGROUPFS_PID = 4400
#: An id that no recorded cgroup path names.
OTHER_ID = "9f" * 32
