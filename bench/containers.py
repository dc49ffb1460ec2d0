"""Idle app containers for the benchmarks (started eight at a time, always removed), and the peer.

The peer is ``docker stats --no-stream`` over the same containers.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

IMAGE = "local/busybox:latest"
#: Idles without waking (one fork an hour) and exits on SIGTERM, so removal is quick.
IDLE = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"


def docker_stats_once(names: Sequence[str]) -> None:
    """Run ``docker stats --no-stream`` once over ``names``: the peer both benchmarks time."""
    subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}}", *names],
        check=True,
        capture_output=True,
        timeout=300,
    )


@contextlib.contextmanager
def idle_containers(n: int) -> Iterator[list[str]]:
    """Yield the names of ``n`` running idle managed containers; remove them all afterwards.

    Names are ``app-<fresh app id>-<replica>``, so the exporter manages them
    and no other test's containers are touched. Removal happens even when
    starting them failed halfway.
    """
    app = secrets.token_hex(6)
    names = [f"app-{app}-{i:04x}" for i in range(1, n + 1)]

    def start(name: str) -> None:
        subprocess.run(
            ["docker", "run", "-d", "--name", name, IMAGE, "/bin/sh", "-c", IDLE],
            check=True,
            capture_output=True,
            timeout=120,
        )

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(start, names))
        yield names
    finally:
        for i in range(0, len(names), 50):
            subprocess.run(
                ["docker", "rm", "-f", *names[i : i + 50]],
                capture_output=True,
                timeout=300,
                check=False,
            )
