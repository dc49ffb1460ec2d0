"""Mounts aimed at the host are refused with a clear 4xx, and nothing is created."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.faults.hostile import (
    MANAGED,
    Target,
    assert_clear_4xx,
)

pytestmark = pytest.mark.faults


async def test_mounts_aimed_at_the_host_are_refused(target: Target, tmp_path: Path) -> None:
    pods = target.settings.pod_base_dir
    inside = pods / "ok"
    inside.mkdir()
    links = pods / "links"
    links.mkdir()
    escapes = {
        "root": "/",
        "etc": "/etc",
        "sock": "/var/run/docker.sock",
        "run": "/run",
        "outside": str(tmp_path),
        "state": str(target.settings.state_dir),
    }
    for label, dest in escapes.items():
        os.symlink(dest, links / label)
    os.symlink(links / "etc", links / "chain")  # a link to a link to /etc
    os.symlink("../../..", links / "up")  # relative, up and out of the prefix
    refused = [
        "/",
        "//",
        "/etc",
        "/etc/",
        "//etc",
        "/./etc",
        "/etc/../etc",
        "/etc/ssl",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/run",
        "/var",
        "/run",
        "/proc/self/root",
        "/proc/1/root/etc",
        "/sys/fs/cgroup",
        "/dev",
        "/boot",
        str(pods / ".."),
        str(pods / "../.."),
        str(pods / "ok/../../.."),
        str(target.settings.state_dir),
        str(target.settings.state_dir / "state.sqlite3"),
        *(str(links / name) for name in (*escapes, "chain", "up")),
        str(links / "up" / "etc"),
    ]

    async def create_mounting(host_path: str) -> tuple[int, Any]:
        return await target.call(
            "POST",
            "/api/v1/containers",
            json={
                "name": MANAGED.replace("0001", "0002"),
                "image": "local/busybox:latest",
                "mounts": [{"host_path": host_path, "container_path": "/data"}],
            },
        )

    for host_path in refused:
        status, body = await create_mounting(host_path)
        assert status == 403, (host_path, status, body)
        assert_clear_4xx(status, body, host_path)
    for relative in ("etc", "./etc", "../etc", ""):
        status, body = await create_mounting(relative)
        assert status == 422, (relative, status, body)
    assert target.driver.acted == []
    # The policy is not refusing everything: a dir under the prefix is fine.
    status, body = await create_mounting(str(inside))
    assert status == 201, body
