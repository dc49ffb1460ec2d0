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
import logging
import os
import platform
import posixpath
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError

from exporter import safefs
from exporter.confinement import Forbidden, MountPolicy
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


#: The largest app_instance.json read back from a pod dir (bodies are 1 MiB by default).
MAX_INSTANCE_BYTES = 64 * 1024 * 1024


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new, never a part.

    Only for dirs no container can write: the parent's path is followed as it is.
    """
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        safefs.write_file(fd, path.name, data, mode)
    finally:
        os.close(fd)


def _refused(paths: PodPaths, e: safefs.UnsafePathError) -> Forbidden:
    return Forbidden(f"pod dir {paths.container_pod_dir()}: refused, {e}")


def prepare_pod_dir(paths: PodPaths, sources: HostSourcePaths, arch: str) -> None:
    """Make the pod dir, its home with the init dirs and its sysinner dir; copy ininit, inagent.

    Every dir is walked from the pod base without following a symlink: the
    tenant writes its home and its sysinner dir (renames, symlinks, FIFOs),
    and what the exporter writes as root must land in the dir it walked.
    Forbidden when the pod dir, its home or its sysinner dir is not a plain dir.
    """
    try:
        with safefs.walked(
            paths.pod_base, [paths.container_name], create=True, create_root=True
        ) as pod:
            home = safefs.open_dir(pod, ["home"], create=True)
            try:
                _make_init_dirs(paths, home)
            finally:
                os.close(home)
            sysinner = safefs.open_dir(pod, ["sysinner"], create=True)
            try:
                safefs.copy_file(sources.ininit_src(), sysinner, "ininit", 0o755)
                safefs.copy_file(sources.inagent_src(arch), sysinner, "inagent", 0o755)
            finally:
                os.close(sysinner)
    except safefs.UnsafePathError as e:
        raise _refused(paths, e) from e


def _make_init_dirs(paths: PodPaths, home: int) -> None:
    for d in INIT_DIRS:
        parts = posixpath.relpath(d, "/home").split("/")
        try:
            os.close(safefs.open_dir(home, parts, create=True))
        except safefs.UnsafePathError as e:
            # The home is the tenant's own: an odd one costs it its init dirs, not its deploy.
            log.warning("replicas: %s: init dir %s not made: %s", paths.container_name, d, e)


def write_app_instance(paths: PodPaths, data: bytes) -> None:
    """Write the instance into the sysinner dir, then the exporter's own record; atomic, safe.

    The record (beside home and sysinner, out of every container's reach) is
    what :func:`read_app_instance` trusts after a restart; the tenant may
    rewrite its own copy at will.
    """
    try:
        with safefs.walked(
            paths.pod_base, [paths.container_name], create=True, create_root=True
        ) as pod:
            sysinner = safefs.open_dir(pod, ["sysinner"], create=True)
            try:
                safefs.write_file(sysinner, "app_instance.json", data)
            finally:
                os.close(sysinner)
            safefs.write_file(pod, "app_instance.json", data)
    except safefs.UnsafePathError as e:
        raise _refused(paths, e) from e


def read_app_instance(paths: PodPaths) -> bytes | None:
    """Return the exporter's record of the pod's instance, or None when it has none.

    A pod dir of upstream's nested layout has no record: it is not reused
    (posting its replica deploys it again in the new layout).
    """
    try:
        with safefs.walked(paths.pod_base, [paths.container_name]) as pod:
            return safefs.read_file(pod, "app_instance.json", MAX_INSTANCE_BYTES)
    except FileNotFoundError:
        return None
    except safefs.UnsafePathError as e:
        raise _refused(paths, e) from e


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
        # Siblings on the host (see exporter.paths): the mount policy refuses nested sources.
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
        mount_policy: MountPolicy | None = None,
    ) -> None:
        self._driver = driver
        # Give the API's own policy: one lock then covers every create of this exporter.
        self.mount_policy = mount_policy or MountPolicy([], pod_base=str(pod_base))
        self.replicas = replicas
        self.pod_base = pod_base
        self._sources = HostSourcePaths(str(host_prefix))
        self._arch = arch or host_arch()
        self._locks: dict[str, asyncio.Lock] = {}

    async def _create_container(self, opts: ContainerCreateOptions) -> ContainerInfo:
        """Create a replica's container through the mount policy (sources under the pod base)."""
        try:
            return await self.mount_policy.create(self._driver, opts, replica=True)
        except Forbidden as e:
            name = opts.name.removesuffix(".next").removesuffix(".prev")
            legacy = self.pod_paths(name).legacy_sysinner_dir()
            if legacy not in str(e):
                raise
            raise Forbidden(
                f"{e}. {name} runs with the old pod layout (its sysinner dir inside its home, "
                f"which its tenant can redirect): remove it (DELETE /api/v1/containers/{name}; "
                "its pod dir and data stay) and post the replica again"
            ) from e

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
                data = read_app_instance(self.pod_paths(entry))
                if data is None:
                    continue
                rep = AppReplicaInstance.model_validate_json(data)
            except (OSError, ValueError, ValidationError, Forbidden) as e:
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
        await asyncio.to_thread(prepare_pod_dir, paths, self._sources, self._arch)
        # A newer revision replaces the container; the pod dir (the app's data) stays.
        await self._driver.container_remove(name)
        await self._create_container(replica_create_options(rep, name, paths))
        await self._driver.container_start(name)
        await asyncio.to_thread(write_app_instance, paths, instance)
        return await self._driver.container_inspect(name)
