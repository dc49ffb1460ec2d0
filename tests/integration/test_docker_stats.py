"""Container stats from the Docker driver against the real engine; the Docker SDK is the oracle."""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from exporter.drivers.docker import DockerDriver
from exporter.errors import NotFoundError
from tests.support.cpu_burn import TICK_NS, burn_own_cpu
from tests.support.engine import TEST_IMAGE, ContainerFactory, new_container_name
from tests.support.requirements import require
from tests.support.waiting import wait_for

MiB = 1024 * 1024
#: CPU the stats test's worker burns, in clock ticks of 10 ms.
BURN_TICKS = 10


def engine_block_device(sdk: docker.DockerClient) -> str:
    """Return the block device that holds the engine's data root (where containers write)."""
    root = sdk.info()["DockerRootDir"]
    best, device = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point, source = fields[4], fields[fields.index("-") + 2]
        inside = root == mount_point or root.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, device = mount_point, source
    return device


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


@pytest.mark.engine
async def test_stats_count_cpu_block_io_and_network(
    driver: DockerDriver, make_container: ContainerFactory, sdk: docker.DockerClient
) -> None:
    device = engine_block_device(sdk)
    require(
        is_block_device(device),
        f"a block device under the engine's data root ({device!r})",
        needs="engine",
    )
    # The receiver, on the default bridge, reads one connection to the end. Its nc
    # gets a stdin that never ends: at end of stdin busybox nc would hang up early.
    receiver = await make_container(
        cmd=[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; sleep 100000 | nc -l -p 5000 >/dev/null; "
            "while :; do sleep 1 & wait $!; done",
        ]
    )
    assert receiver.ip
    # The worker writes 4 MiB past the page cache, burns BURN_TICKS of CPU (a figure
    # reached, not a fixed loop whose cost differs by machine), and sends 1 MiB to the
    # receiver. Block I/O lists stay empty on cgroup v1 until some container has a
    # throttle, and the model has no throttle option: the SDK makes this one.
    script = (
        "trap 'exit 0' TERM; "
        "(until dd if=/dev/zero bs=1024 count=1024 2>/dev/null | nc $PEER 5000; "
        "do sleep 1; done) & "
        "dd if=/dev/zero of=/tmp/blob bs=1M count=4 oflag=direct; "
        f"{burn_own_cpu(BURN_TICKS)}; "
        "while :; do sleep 1 & wait $!; done"
    )
    worker = new_container_name(9)
    sdk.containers.create(
        TEST_IMAGE,
        ["/bin/sh", "-c", script],
        name=worker,
        environment={"PEER": receiver.ip},
        device_write_bps=[{"Path": device, "Rate": 100 * MiB}],
    )
    try:
        await driver.container_start(worker)
        # Counters once everything is done: cpu time, the 4 MiB, the 1 MiB.
        last: dict[str, Any] = {}

        async def worked() -> bool:
            s = await driver.container_stats(worker)
            last.update(dataclasses.asdict(s))
            return (
                s.cpu_total_usage > (BURN_TICKS - 1) * TICK_NS
                and s.blk_write_bytes >= 4 * MiB
                and s.blk_write_ops >= 4
                and s.net_tx_bytes > 1 * MiB
                and s.net_rx_bytes > 0
            )

        await wait_for(worked, 30, "the worker's counters to move")
        asked_at = time.time()
        s = await driver.container_stats(worker)
        answered_at = time.time()
        assert s.memory_usage > 0
        assert s.cpu_user_usage + s.cpu_system_usage > 0
        # The one-shot sample is taken during the call, in unix seconds.
        assert asked_at <= s.time <= answered_at
        # Counters never go backwards.
        for key in ("cpu_total_usage", "blk_write_bytes", "net_tx_bytes"):
            assert getattr(s, key) >= last[key]

        async def received() -> bool:
            r = await driver.container_stats(receiver.name)
            return r.net_rx_bytes > 1 * MiB and r.net_tx_bytes > 0

        await wait_for(received, 15, "the receiver to count the 1 MiB")
    finally:
        await driver.container_remove(worker)
    with pytest.raises(NotFoundError):
        await driver.container_inspect(worker)
