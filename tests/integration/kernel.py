"""What the kernel says about a container, for the engine tests to compare with."""

from __future__ import annotations

from pathlib import Path


def kernel_cgroup_path(pid: int, controller: str = "memory") -> str:
    """Return the cgroup of ``pid`` as ``/proc/<pid>/cgroup`` names it (v1 or v2)."""
    unified = ""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
        if not controllers:
            unified = path
    return unified
