"""The mount policy's rules on the in-memory driver: roots, the antichain, the lock, the recheck."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from exporter.confinement import Forbidden, MountPolicy
from exporter.models import ContainerCreateOptions, ContainerInfo, MountBind
from exporter.testing import FakeDriver


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    made = tmp_path / "pods"
    made.mkdir()
    return made


def opts(name: str, *sources: Path | str, uid: int = 0) -> ContainerCreateOptions:
    return ContainerCreateOptions(
        name=name,
        image="local/busybox:latest",
        mounts=[
            MountBind(host_path=str(s), container_path=f"/m{i}", uid=uid)
            for i, s in enumerate(sources)
        ],
    )


async def test_a_source_nested_in_another_containers_is_refused_both_ways(prefix: Path) -> None:
    policy = MountPolicy([str(prefix)])
    driver = FakeDriver()
    await policy.create(driver, opts("app-aaaaaaaa-0001", prefix / "x" / "d"))
    with pytest.raises(Forbidden, match=r"contains .*/x/d, which app-aaaaaaaa-0001 mounts"):
        await policy.create(driver, opts("app-aaaaaaaa-0002", prefix / "x"))
    with pytest.raises(Forbidden, match="lies inside"):
        await policy.create(driver, opts("app-aaaaaaaa-0003", prefix / "x" / "d" / "e"))
    # Equal and sibling sources are fine: neither is on the other's path.
    await policy.create(driver, opts("app-aaaaaaaa-0004", prefix / "x" / "d"))
    await policy.create(driver, opts("app-aaaaaaaa-0005", prefix / "x" / "e"))
    assert driver.calls["container_create"] == 3


async def test_a_create_may_not_nest_its_own_mounts(prefix: Path) -> None:
    policy = MountPolicy([str(prefix)])
    with pytest.raises(Forbidden, match="this container mounts"):
        await policy.create(FakeDriver(), opts("app-aaaaaaaa-0001", prefix / "h", prefix / "h/s"))
    assert not (prefix / "h").exists()


async def test_sources_outside_every_root_do_not_count(prefix: Path, tmp_path: Path) -> None:
    policy = MountPolicy([str(prefix)])
    driver = FakeDriver()
    # A foreign container mounting the prefix's parent or the prefix itself (the
    # exporter's own, in a container) is not part of the antichain.
    driver.add("exporter", mount_sources=(str(prefix),))
    driver.add("foreign", mount_sources=(str(tmp_path),))
    await policy.create(driver, opts("app-aaaaaaaa-0001", prefix / "a"))


@pytest.mark.parametrize("which", ["prefix", "pod base", "above the pod base"])
async def test_a_root_or_its_ancestor_is_never_a_source(tmp_path: Path, which: str) -> None:
    pod_base = tmp_path / "srv" / "pods"
    pod_base.mkdir(parents=True)
    policy = MountPolicy([str(tmp_path)], pod_base=str(pod_base))
    target = {"prefix": tmp_path, "pod base": pod_base, "above the pod base": pod_base.parent}
    with pytest.raises(Forbidden, match=r"it would expose|allowed prefix"):
        await policy.create(FakeDriver(), opts("app-aaaaaaaa-0001", target[which]))


async def test_replica_sources_must_lie_under_the_pod_base(tmp_path: Path) -> None:
    pod_base, prefix = tmp_path / "pods", tmp_path / "data"
    prefix.mkdir()
    policy = MountPolicy([str(prefix)], pod_base=str(pod_base))
    with pytest.raises(Forbidden, match="not under an allowed prefix"):
        await policy.create(FakeDriver(), opts("app-cccccccc-0001", prefix / "a"), replica=True)
    # The pod base is made when missing; its source dirs too.
    await policy.create(
        FakeDriver(), opts("app-cccccccc-0001", pod_base / "n" / "home"), replica=True
    )
    assert (pod_base / "n" / "home").is_dir()


async def test_a_prefix_spelled_through_a_symlink_is_walked_and_sent_resolved(
    prefix: Path, tmp_path: Path
) -> None:
    (tmp_path / "alias").symlink_to(prefix)
    policy = MountPolicy([str(tmp_path / "alias")])
    driver = FakeDriver()
    made = await policy.create(driver, opts("app-aaaaaaaa-0001", tmp_path / "alias" / "a"))
    assert made.mount_sources == (str(prefix / "a"),)


async def test_a_symlink_below_the_prefix_is_refused_and_nothing_created(
    prefix: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (prefix / "link").symlink_to(outside)
    driver = FakeDriver()
    with pytest.raises(Forbidden, match="link: a symlink"):
        await MountPolicy([str(prefix)]).create(
            driver, opts("app-aaaaaaaa-0001", prefix / "link" / "d", uid=4242)
        )
    assert os.listdir(outside) == []
    assert driver.calls["container_create"] == 0


async def test_concurrent_nested_creates_never_both_pass(prefix: Path) -> None:
    policy = MountPolicy([str(prefix)])
    driver = FakeDriver()
    for round_ in range(20):
        outer, inner = prefix / f"r{round_}", prefix / f"r{round_}" / "d"
        results = await asyncio.gather(
            policy.create(driver, opts(f"app-aaaaaaaa-{2 * round_ + 1:04x}", outer)),
            policy.create(driver, opts(f"app-aaaaaaaa-{2 * round_ + 2:04x}", inner)),
            return_exceptions=True,
        )
        made = [r for r in results if isinstance(r, ContainerInfo)]
        refused = [r for r in results if isinstance(r, Forbidden)]
        assert (len(made), len(refused)) == (1, 1), results
    # Under the lock the loser is refused before the engine is asked (the recheck,
    # which also keeps the rule across processes, would undo it only afterwards).
    assert driver.calls["container_create"] == 20


async def test_a_container_made_meanwhile_elsewhere_undoes_the_create(prefix: Path) -> None:
    policy = MountPolicy([str(prefix)])
    driver = FakeDriver()
    real_create = driver.container_create

    async def create_while_another_process_does(o: ContainerCreateOptions) -> ContainerInfo:
        # Another exporter (not under our lock) makes a nested one at the same moment.
        driver.add("app-bbbbbbbb-0001", mount_sources=(str(prefix / "x"),))
        return await real_create(o)

    driver.container_create = create_while_another_process_does  # type: ignore[method-assign]
    with pytest.raises(Forbidden, match="app-bbbbbbbb-0001 mounts"):
        await policy.create(driver, opts("app-aaaaaaaa-0001", prefix / "x" / "d"))
    assert {c.name for c in driver.containers.values()} == {"app-bbbbbbbb-0001"}


async def test_uid_is_applied_to_the_walked_dir(prefix: Path) -> None:
    await MountPolicy([str(prefix)]).create(
        FakeDriver(), opts("app-aaaaaaaa-0001", prefix / "a" / "b", uid=4242)
    )
    assert (prefix / "a" / "b").stat().st_uid == 4242
    assert (prefix / "a").stat().st_uid == os.getuid()


@pytest.mark.parametrize("where", ["innerstack", "innerstack/bin"])
async def test_the_host_installation_is_never_mounted(prefix: Path, where: str) -> None:
    # A prefix that holds the host installation: ininit and inagent, run by every replica.
    policy = MountPolicy([str(prefix)], host_prefix=str(prefix / "innerstack"))
    with pytest.raises(Forbidden, match="the host installation"):
        await policy.create(FakeDriver(), opts("app-aaaaaaaa-0001", prefix / where))
    await policy.create(FakeDriver(), opts("app-aaaaaaaa-0001", prefix / "beside"))
