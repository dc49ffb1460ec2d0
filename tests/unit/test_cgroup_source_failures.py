"""The cgroup stats source on bad reads: missing, half-written, vanished files, reused pids."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from errno import ENODEV, ESRCH
from pathlib import Path
from typing import Any

import pytest

from exporter import cgroupfs
from exporter.errors import NotFoundError, StatsUnavailableError
from exporter.models import ContainerStats
from exporter.naming import NamingScheme
from exporter.poller import Poller
from exporter.sources import cgroup as cgroup_module
from exporter.sources.base import (
    DriverStatsSource,
    FallbackStatsSource,
    SourcedStats,
)
from exporter.sources.cgroup import CgroupStatsSource
from exporter.testing import FakeDriver
from tests.support.cgroup_data import (
    DATA,
    OTHER_ID,
    V1_ID,
    V1_PID,
    V2_SYSTEMD_ID,
    V2_SYSTEMD_PID,
)
from tests.support.cgroup_source import (
    V2_HOSTNET_ID,
    V2_HOSTNET_PID,
    V2_SCOPE,
    T,
    error,
    info,
    read,
    sample,
    source,
    tree,
)

V1_DIR = f"sys/fs/cgroup/{{}}/docker/{V1_ID}"


async def test_missing_file_is_unavailable_and_the_fallback_answers(tmp_path: Path) -> None:
    root = tree(tmp_path, "v1")
    (root / f"sys/fs/cgroup/memory/docker/{V1_ID}/memory.stat").unlink()
    c = info(V1_ID, V1_PID, name="app-0123abcd-0001")
    results = await read(root, c)
    assert "memory.stat" in str(error(results[V1_ID], StatsUnavailableError))

    fake = FakeDriver()
    fake.add(c.name, id=V1_ID, pid=V1_PID)
    fake.stats[V1_ID] = ContainerStats(time=1.0, cpu_total_usage=7)
    combo = FallbackStatsSource(source(root), DriverStatsSource(fake))
    assert combo.name == "cgroup+fake"
    answered = (await combo.read_many([c]))[V1_ID]
    assert isinstance(answered, SourcedStats)
    assert answered.source == "fake"
    assert answered.stats.cpu_total_usage == 7
    assert fake.calls["container_stats"] == 1


async def test_missing_controller_is_unavailable(tmp_path: Path) -> None:
    root = tree(tmp_path, "v1")
    shutil.rmtree(root / "sys/fs/cgroup/blkio")
    results = await read(root, info(V1_ID, V1_PID))
    assert "blkio" in str(error(results[V1_ID], StatsUnavailableError))


def _half(text: str) -> str:
    return text[: len(text) // 2]


@pytest.mark.parametrize(
    ("relative", "damage"),
    [
        (V1_DIR.format("memory") + "/memory.stat", _half),
        (V1_DIR.format("memory") + "/memory.usage_in_bytes", lambda t: t.rstrip("\n")[:3]),
        (V1_DIR.format("memory") + "/memory.usage_in_bytes", lambda t: ""),
        (V1_DIR.format("cpuacct") + "/cpuacct.usage", lambda t: "12ab\n"),
        (V1_DIR.format("cpuacct") + "/cpuacct.stat", lambda t: "user 8\n"),
        (V1_DIR.format("blkio") + "/blkio.throttle.io_service_bytes_recursive", _half),
        (V1_DIR.format("blkio") + "/blkio.throttle.io_serviced_recursive", lambda t: "\n" + t),
        (
            V1_DIR.format("blkio") + "/blkio.throttle.io_serviced_recursive",
            lambda t: "".join(t.splitlines(keepends=True)[:-1]),
        ),
        (f"proc/{V1_PID}/net/dev", _half),
        (f"proc/{V1_PID}/net/dev", lambda t: t.splitlines()[2] + "\n"),
        (f"proc/{V1_PID}/cgroup", lambda t: "\n".join(t.splitlines())),
        (f"proc/{V1_PID}/cgroup", lambda t: "garbage\n"),
    ],
    ids=[
        "memory.stat-half",
        "memory.usage-cut",
        "memory.usage-empty",
        "cpuacct.usage-not-a-number",
        "cpuacct.stat-no-system",
        "blkio-bytes-half",
        "blkio-ops-blank-line",
        "blkio-ops-cut-before-total",
        "net-dev-half",
        "net-dev-no-header",
        "cgroup-no-final-newline",
        "cgroup-garbage",
    ],
)
async def test_half_written_v1_file_is_unavailable_never_a_number(
    tmp_path: Path, relative: str, damage: Callable[[str], str]
) -> None:
    root = tree(tmp_path, "v1")
    path = root / relative
    path.write_text(damage(path.read_text()))
    results = await read(root, info(V1_ID, V1_PID))
    error(results[V1_ID], StatsUnavailableError)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("io.stat", "254:0 rbytes=1052672 wbytes\n"),
        ("io.stat", "254:0 rbytes=1052672 wbytes=20971520 rios=4"),
        ("cpu.stat", ""),
        ("cpu.stat", "usage_usec 5123456\nuser_usec 41"),
        ("memory.stat", "anon 5373952\nfile 20541440\n"),
        ("memory.current", "2795"),
    ],
)
async def test_half_written_v2_file_spoils_only_its_own_container(
    tmp_path: Path, name: str, content: str
) -> None:
    root = tree(tmp_path, "v2")
    (root / V2_SCOPE / name).write_text(content)
    results = await read(
        root, info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)
    )
    error(results[V2_SYSTEMD_ID], StatsUnavailableError)
    assert sample(results[V2_HOSTNET_ID]).cpu_total_usage == 81_234_000


async def test_container_that_exited_between_list_and_read_is_not_found(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    shutil.rmtree(root / "proc" / str(V2_SYSTEMD_PID))
    results = await read(
        root, info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)
    )
    error(results[V2_SYSTEMD_ID], NotFoundError)
    sample(results[V2_HOSTNET_ID])


def _fail_reads_of(suffix: str, code: int) -> Callable[[int], bytes]:
    """Return a stand-in for pread_all that fails on held files whose path ends in ``suffix``."""
    real = cgroupfs.pread_all

    def pread_all(fd: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(code, os.strerror(code))
        return real(fd)

    return pread_all


async def test_exit_after_a_good_read_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held /proc/<pid>/cgroup answers ESRCH once its process is gone, as the kernel does."""
    src = source(tree(tmp_path, "v1"))
    c = info(V1_ID, V1_PID)
    sample((await src.read_many([c]))[V1_ID])
    assert src.held_files == 12  # net/dev, cgroup, six cgroup files and four optional ones
    monkeypatch.setattr(cgroupfs, "pread_all", _fail_reads_of(f"{V1_PID}/cgroup", ESRCH))
    error((await src.read_many([c]))[V1_ID], NotFoundError)
    assert src.held_files == 0


@pytest.mark.parametrize(("pid_dir_left", "expected"), [(False, NotFoundError), (True, None)])
async def test_cgroup_removed_under_a_held_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pid_dir_left: bool,
    expected: type[Exception] | None,
) -> None:
    """ENODEV from a held cgroup file: gone if the pid is gone, else unavailable."""
    root = tree(tmp_path, "v1")
    src = source(root)
    c = info(V1_ID, V1_PID)
    sample((await src.read_many([c]))[V1_ID])
    monkeypatch.setattr(cgroupfs, "pread_all", _fail_reads_of("memory.stat", ENODEV))
    if not pid_dir_left:
        shutil.rmtree(root / "proc" / str(V1_PID))
    error((await src.read_many([c]))[V1_ID], expected or StatsUnavailableError)


async def test_held_files_are_reread_from_the_start_each_poll(tmp_path: Path) -> None:
    root = tree(tmp_path, "v1")
    src = source(root)
    c = info(V1_ID, V1_PID)
    first = sample((await src.read_many([c]))[V1_ID])
    usage = root / f"sys/fs/cgroup/cpuacct/docker/{V1_ID}/cpuacct.usage"
    usage.write_text(f"{first.cpu_total_usage + 12345}\n")  # same inode, new content
    # The cgroup directories move away: only the held descriptors can still read them.
    for controller in ("cpuacct", "memory", "blkio"):
        (root / f"sys/fs/cgroup/{controller}").rename(root / f"sys/fs/cgroup/{controller}.old")
    second = sample((await src.read_many([c]))[V1_ID])
    assert second.cpu_total_usage == first.cpu_total_usage + 12345
    assert second.memory_usage == first.memory_usage
    src.close()
    assert src.held_files == 0
    # Closed, it reads by path again, and the paths are gone now.
    error((await src.read_many([c]))[V1_ID], StatsUnavailableError)


async def test_without_a_descriptor_budget_every_read_opens_by_path(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    src = CgroupStatsSource(root / "proc", root / "sys/fs/cgroup", max_held_files=0)
    c = info(V2_SYSTEMD_ID, V2_SYSTEMD_PID)
    assert sample((await src.read_many([c]))[V2_SYSTEMD_ID]).cpu_total_usage == 5_123_456_000
    assert src.held_files == 0
    (root / V2_SCOPE).rename(root / f"{V2_SCOPE}.old")
    error((await src.read_many([c]))[V2_SYSTEMD_ID], StatsUnavailableError)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_descriptors_of_containers_no_longer_listed_are_closed(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    baseline = _open_fds()
    src = source(root)
    a, b = info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)
    await src.read_many([a, b])
    # net/dev, cgroup and four cgroup files each; a has the three optional v2 files too.
    assert src.held_files == 15
    assert _open_fds() == baseline + 15
    await src.read_many([a])
    assert src.held_files == 9
    assert _open_fds() == baseline + 9
    src.close()
    assert _open_fds() == baseline


async def test_a_budget_holds_some_containers_and_reads_the_rest_by_path(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    src = CgroupStatsSource(root / "proc", root / "sys/fs/cgroup", max_held_files=6)
    a, b = info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)
    results = await src.read_many([a, b])
    assert src.held_files == 6
    assert sample(results[V2_HOSTNET_ID]).cpu_total_usage == 81_234_000
    assert sample(results[V2_SYSTEMD_ID]).cpu_total_usage == 5_123_456_000
    src.close()


async def test_poller_skips_a_vanished_container_silently(tmp_path: Path) -> None:
    root = tree(tmp_path, "v2")
    fake = FakeDriver()
    alive = fake.add("app-0123abcd-0001", id=V2_HOSTNET_ID, pid=V2_HOSTNET_PID)
    gone = fake.add("app-0123abcd-0002", id=V2_SYSTEMD_ID, pid=V2_SYSTEMD_PID)
    shutil.rmtree(root / "proc" / str(V2_SYSTEMD_PID))
    poller = Poller(
        fake,
        source(root),
        naming=NamingScheme(),
        process_counter=None,
    )
    snapshot = await poller.poll_once()
    by_id = {s.info.id: s for s in snapshot.containers}
    assert by_id[alive.id].stats is not None
    assert by_id[alive.id].stats_source == "cgroup"
    assert by_id[gone.id].stats is None
    assert not by_id[gone.id].stale
    assert sum(poller.health.errors.values()) == 0
    assert fake.calls["container_stats"] == 0


@pytest.mark.parametrize(
    "new_cgroup",
    [
        f"0::/docker/{OTHER_ID}\n",  # another container's init got the pid
        "0::/user.slice/user-0.slice/session-4.scope\n",  # a host process got it
    ],
)
async def test_reused_pid_gives_no_numbers_even_after_a_good_read(
    tmp_path: Path, new_cgroup: str
) -> None:
    root = tree(tmp_path, "v2")
    src = source(root)
    c = info(V2_SYSTEMD_ID, V2_SYSTEMD_PID)
    sample((await src.read_many([c]))[V2_SYSTEMD_ID])  # resolved and cached
    # The container exits, its pid goes to someone else, the old cgroup lingers.
    (root / "proc" / str(V2_SYSTEMD_PID) / "cgroup").write_text(new_cgroup)
    results = await src.read_many([c])
    assert "not the container's" in str(error(results[V2_SYSTEMD_ID], StatsUnavailableError))


async def test_reused_pid_in_v1(tmp_path: Path) -> None:
    root = tree(tmp_path, "v1")
    cgroup_file = root / "proc" / str(V1_PID) / "cgroup"
    cgroup_file.write_text(cgroup_file.read_text().replace(V1_ID, OTHER_ID))
    results = await read(root, info(V1_ID, V1_PID))
    error(results[V1_ID], StatsUnavailableError)


async def test_no_pid_is_unavailable() -> None:
    results = await read(DATA / "v2", info(V2_SYSTEMD_ID, 0))
    error(results[V2_SYSTEMD_ID], StatsUnavailableError)


async def test_unexpected_error_is_returned_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> ContainerStats:
        raise RuntimeError("boom")

    monkeypatch.setattr(cgroup_module, "stats_v2", broken)
    results = await read(DATA / "v2", info(V2_SYSTEMD_ID, V2_SYSTEMD_PID))
    assert "boom" in str(error(results[V2_SYSTEMD_ID], StatsUnavailableError))


async def test_all_reading_happens_in_one_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = asyncio.to_thread

    async def counting(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        calls.append(len(args[0]))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(cgroup_module.asyncio, "to_thread", counting)
    src = source(DATA / "v2")
    results = await src.read_many(
        [info(V2_SYSTEMD_ID, V2_SYSTEMD_PID), info(V2_HOSTNET_ID, V2_HOSTNET_PID)]
    )
    assert len(results) == 2
    assert calls == [2]
    assert await src.read_many([]) == {}
    assert calls == [2]
