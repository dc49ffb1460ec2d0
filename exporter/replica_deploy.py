"""Deploy a replica: TryStore decides, then pod dir, container, start.

``AppReplicaInstanceList.try_store`` is the single judge of whether a posted
replica is new or of a newer revision; an equal or older one touches
nothing. A stored one gets its host pod dir laid out (the init dirs, the
ininit script and inagent binary copied from the host installation when
present, ``app_instance.json`` written atomically), its container created
with the pod's home and sysinner dirs bind-mounted and ``container_cmd()``
as entrypoint, and started. When any step fails the store is undone, so a
retry of the same revision is not mistaken for "unchanged".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError

from exporter.drivers.base import Driver
from exporter.models import AppReplicaInstance, ContainerCreateOptions, ContainerInfo, MountBind
from exporter.paths import INIT_DIRS, SYSINNER_DIR, HostSourcePaths, PodPaths, container_cmd
from exporter.replicas import AppReplicaInstanceList

#: Labels every replica container carries, so an operator can tell what made it.
LABEL_APP = "io.sysinner.app"
LABEL_REPLICA = "io.sysinner.replica"
LABEL_REVISION = "io.sysinner.revision"

log = logging.getLogger(__name__)

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_arch(machine: str | None = None) -> str:
    """Return the inagent architecture name (amd64, arm64) of this host."""
    m = (machine or platform.machine()).lower()
    return _ARCH.get(m, m)


class DeployResult(StrEnum):
    """What a deploy did."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Deployment:
    """The outcome of one deploy: the container's name and, when created, its state."""

    result: DeployResult
    name: str
    revision: int
    container: ContainerInfo | None = None


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory itself is synced.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _copy_if_present(src: str, dst: str) -> bool:
    if not os.path.isfile(src):
        return False
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)
    return True


def lay_out_pod(paths: PodPaths, sources: HostSourcePaths, arch: str, instance: bytes) -> None:
    """Create the pod dir, copy ininit/inagent when the host has them, write the instance."""
    for d in (paths.home_dir(), paths.sysinner_dir(), *(paths.host_path(p) for p in INIT_DIRS)):
        os.makedirs(d, exist_ok=True)
    _copy_if_present(sources.ininit_src(), paths.ininit_file())
    _copy_if_present(sources.inagent_src(arch), paths.inagent_file())
    write_atomic(Path(paths.app_instance_file()), instance)


def replica_create_options(
    rep: AppReplicaInstance, name: str, paths: PodPaths
) -> ContainerCreateOptions:
    """Return how a replica's container is created: its spec, the pod mounts, ininit."""
    spec = rep.app.spec
    return ContainerCreateOptions(
        name=name,
        image=spec.image,
        cmd=container_cmd(),
        env=list(spec.env),
        labels={
            **spec.labels,
            LABEL_APP: rep.app.id,
            LABEL_REPLICA: str(rep.replica.rep_id),
            LABEL_REVISION: str(rep.deploy_revision),
        },
        hostname=name,
        cpu_limit=spec.cpu_limit,
        memory_limit=spec.memory_limit,
        ports=list(spec.ports),
        restart_policy=spec.restart_policy,
        mounts=[
            MountBind(host_path=paths.home_dir(), container_path="/home"),
            MountBind(host_path=paths.sysinner_dir(), container_path=SYSINNER_DIR),
        ],
    )


class ReplicaDeployer:
    """Deploys posted replicas through a Driver into pod dirs under ``pod_base``."""

    def __init__(
        self,
        driver: Driver,
        replicas: AppReplicaInstanceList,
        *,
        pod_base: Path,
        host_prefix: Path,
        arch: str | None = None,
    ) -> None:
        self._driver = driver
        self.replicas = replicas
        self.pod_base = pod_base
        self._sources = HostSourcePaths(str(host_prefix))
        self._arch = arch or host_arch()
        self._locks: dict[str, asyncio.Lock] = {}

    async def load_existing(self) -> int:
        """Store the replicas whose pod dirs already hold an app_instance.json; return how many.

        The replica list lives in memory: without this, re-posting an unchanged
        revision after an exporter restart would recreate its container.
        """
        found = await asyncio.to_thread(self._read_pod_instances)
        return sum(1 for rep in found if self.replicas.try_store(rep))

    def _read_pod_instances(self) -> list[AppReplicaInstance]:
        try:
            entries = sorted(os.listdir(self.pod_base))
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            try:
                path = Path(self.pod_paths(entry).app_instance_file())
                rep = AppReplicaInstance.model_validate_json(path.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError, ValidationError) as e:
                log.warning("replicas: skipping pod dir %s: %s", entry, e)
                continue
            if self.replicas.container_name(rep) != entry:
                log.warning("replicas: pod dir %s holds another replica's instance", entry)
                continue
            found.append(rep)
        return found

    def pod_paths(self, name: str) -> PodPaths:
        """Return the pod paths of container ``name``."""
        return PodPaths(str(self.pod_base), name)

    async def deploy(self, rep: AppReplicaInstance) -> Deployment:
        """Deploy ``rep`` when try_store takes it; raise DriverError/OSError after undoing it.

        ValueError when the app id or replica id make no valid container name.
        """
        name = self.replicas.container_name(rep)
        lock = self._locks.setdefault(name, asyncio.Lock())
        # One deploy per name at a time: a newer revision waits for the older to finish.
        async with lock:
            known = self.replicas.get(name) is not None
            if not self.replicas.try_store(rep):
                return Deployment(DeployResult.UNCHANGED, name, rep.deploy_revision)
            try:
                info = await self._create(rep, name)
            except BaseException:
                self.replicas.forget(name, rep.deploy_revision)
                raise
        result = DeployResult.UPDATED if known else DeployResult.CREATED
        return Deployment(result, name, rep.deploy_revision, info)

    async def _create(self, rep: AppReplicaInstance, name: str) -> ContainerInfo:
        paths = self.pod_paths(name)
        instance = rep.model_dump_json(indent=2).encode()
        await asyncio.to_thread(lay_out_pod, paths, self._sources, self._arch, instance)
        # A newer revision replaces the container; the pod dir (the app's data) stays.
        await self._driver.container_remove(name)
        await self._driver.container_create(replica_create_options(rep, name, paths))
        await self._driver.container_start(name)
        return await self._driver.container_inspect(name)
