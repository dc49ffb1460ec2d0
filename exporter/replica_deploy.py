"""Deploy a replica so that a failed deploy never leaves it without a container.

The order (the README's replica section says the same):

1. The whole create options are built and validated from the posted replica
   before anything is touched; an error names the replica body's own field
   (``app.spec.image``, ``app.spec.env.2``, ``replica.rep_id``). A host without
   the ininit script is refused here too: its container could not start.
2. The new container is created as ``<name>.next`` (an image the engine does
   not have fails here, with nothing changed).
3. Only then is the old one renamed ``<name>.prev`` (still running), the new
   one renamed ``<name>``, the old one stopped and the new one started and
   watched for ``start_settle_seconds``. If the start fails or the container
   exits in that time, the new one is removed, ``.prev`` is renamed back and
   started again if it was running, and the error is raised.
4. ``.prev`` is removed once the new one runs; ``app_instance.json`` is
   written last, and only then does the in-memory store take the revision.

So the store (``AppReplicaInstanceList``, sysinner's TryStore) only ever holds
revisions that were deployed, and "strictly greater" compares against the
revision that actually ran. An equal or older revision is "unchanged" only
while the container ``<name>`` exists with that stored revision in its
``io.sysinner.revision`` label; otherwise the stored entry is void and the
post deploys. A failed newer revision is never stored, so posting the older
one again (a rollback) finds it running: unchanged.

An exporter killed anywhere in step 2-4 leaves ``.next``/``.prev``
leftovers; :meth:`ReplicaDeployer.reconcile` finishes or undoes the swap at
start and before every deploy of that name (see its docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import posixpath
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError

from exporter import safefs
from exporter.confinement import Forbidden, MountPolicy
from exporter.drivers.base import Driver
from exporter.errors import DriverError, ExporterError, NotFoundError
from exporter.models import (
    AppReplicaInstance,
    ContainerCreateOptions,
    ContainerInfo,
    ContainerState,
    MountBind,
)
from exporter.paths import INIT_DIRS, SYSINNER_DIR, HostSourcePaths, PodPaths, container_cmd
from exporter.replicas import AppReplicaInstanceList

#: Labels every replica container carries, so an operator can tell what made it.
LABEL_APP = "io.sysinner.app"
LABEL_REPLICA = "io.sysinner.replica"
LABEL_REVISION = "io.sysinner.revision"

#: The name a new revision's container is created under, until it replaces the old one.
NEXT_SUFFIX = ".next"
#: The name the old revision's container has while it is being replaced.
PREV_SUFFIX = ".prev"

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


@contextlib.contextmanager
def _pod_dir(paths: PodPaths, *, create: bool) -> Iterator[int]:
    """Yield an fd of the pod dir, walked from the pod base; refused unless the exporter owns it.

    Only the exporter makes pod dirs and no container mounts one (the mount
    policy's antichain), so a pod dir of another owner was made behind its back.
    """
    with safefs.walked(
        paths.pod_base, [paths.container_name], create=create, create_root=create
    ) as pod:
        safefs.require_owner(pod, os.geteuid(), paths.container_pod_dir())
        yield pod


def prepare_pod_dir(paths: PodPaths, sources: HostSourcePaths, arch: str) -> None:
    """Make the pod dir, its home with the init dirs and its sysinner dir; copy ininit, inagent.

    Every dir is walked from the pod base without following a symlink: the
    tenant writes its home and its sysinner dir (renames, symlinks, FIFOs),
    and what the exporter writes as root must land in the dir it walked.
    Forbidden when the pod dir, its home or its sysinner dir is not a plain dir.
    """
    try:
        with _pod_dir(paths, create=True) as pod:
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
        with _pod_dir(paths, create=True) as pod:
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
        with _pod_dir(paths, create=False) as pod:
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


class ReplicaSpecError(ExporterError):
    """The replica makes no valid container; ``errors`` name the replica body's fields."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid {first['field']}: {first['message']}{more}")
        self.errors = errors


class ReplicaImageMissingError(ExporterError):
    """The engine has no such image: nothing was created or changed."""

    field = "app.spec.image"

    def __init__(self, image: str, message: str) -> None:
        super().__init__(f"{self.field}: the engine has no image {image!r}; pull it first")
        self.image = image
        self.message = message


class ReplicaHostNotReadyError(ExporterError):
    """The host lacks what every replica needs (the ininit script): nothing was touched."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class ReplicaStartError(ExporterError):
    """The new revision's container did not start or exited at once; it was rolled back.

    ``old_revision`` is the revision put back (None when there was none);
    ``rollback_error`` says why putting it back failed, if it did.
    """

    def __init__(
        self,
        name: str,
        revision: int,
        reason: str,
        detail: str,
        old_revision: str | None,
        old_running: bool,
        rollback_error: str | None = None,
    ) -> None:
        if rollback_error is not None:
            after = f"rolling back failed ({rollback_error}); the next deploy or start repairs it"
        elif old_revision is None:
            after = "no container is left"
        elif old_running:
            after = f"revision {old_revision} keeps running"
        else:
            after = f"revision {old_revision} is back, stopped as it was"
        super().__init__(f"replica {name} revision {revision} did not start: {reason}; {after}")
        self.name = name
        self.revision = revision
        self.reason = reason
        self.detail = detail
        self.old_revision = old_revision
        self.rollback_error = rollback_error


#: Where each create option comes from in the replica body, for error messages.
_OPTION_FIELDS = {
    "name": "app.id",
    "hostname": "app.id",
    "image": "app.spec.image",
    "env": "app.spec.env",
    "labels": "app.spec.labels",
    "cpu_limit": "app.spec.cpu_limit",
    "memory_limit": "app.spec.memory_limit",
    "ports": "app.spec.ports",
    "restart_policy": "app.spec.restart_policy",
}


def _replica_field(loc: tuple[int | str, ...], message: str) -> str:
    """Return the replica body's field for an error at ``loc`` of the create options."""
    if not loc:
        # A model-level check says which field it is about first ("ports: ...").
        head = message.split(":", 1)[0].removeprefix("Value error, ")
        loc = (head,) if head in _OPTION_FIELDS else ()
    if not loc or str(loc[0]) not in _OPTION_FIELDS:
        return "app.spec"
    return ".".join([_OPTION_FIELDS[str(loc[0])], *(str(p) for p in loc[1:])])


def spec_errors(e: ValidationError) -> list[dict[str, str]]:
    """Return a create-options validation error as errors on the replica body's fields."""
    errors = []
    for err in e.errors(include_url=False, include_context=False, include_input=False):
        message = err["msg"].removeprefix("Value error, ")
        errors.append(
            {"field": _replica_field(err["loc"], message), "message": message, "type": err["type"]}
        )
    return errors


#: How long a new container must stay up after its start to count as started, seconds.
START_SETTLE_SECONDS = 1.0


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
        start_settle_seconds: float = START_SETTLE_SECONDS,
        mount_policy: MountPolicy | None = None,
    ) -> None:
        self._driver = driver
        # Give the API's own policy: one lock then covers every create of this exporter.
        self.mount_policy = mount_policy or MountPolicy([], pod_base=str(pod_base))
        self.replicas = replicas
        self.pod_base = pod_base
        self._sources = HostSourcePaths(str(host_prefix))
        self._arch = arch or host_arch()
        # How long a new container must stay up after its start to count as started:
        # an ininit that fails exits within milliseconds.
        self._start_settle = start_settle_seconds
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}

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
        """Store the replicas whose pod dirs hold an app_instance.json, repair cut deploys.

        Returns how many were stored. The replica list lives in memory: without
        this, re-posting an unchanged revision after an exporter restart would
        recreate its container. A deploy cut by a kill of the exporter is then
        finished or undone (:meth:`reconcile`); an engine that does not answer
        now only delays that to the replica's next deploy.
        """
        found = await asyncio.to_thread(self._read_pod_instances)
        stored = sum(1 for rep in found if self.replicas.try_store(rep))
        try:
            names = await self._names_to_reconcile()
        except DriverError as e:
            log.warning("replicas: cannot look for cut deploys now, at the next deploy: %s", e)
            return stored
        for name in sorted(names):
            try:
                async with self._locked(name):
                    await self.reconcile(name)
            except DriverError as e:
                log.error("replicas: cannot repair the cut deploy of %s: %s", name, e)
        return stored

    def _deployed_as(self, base: str, info: ContainerInfo) -> bool:
        """Return True when ``info`` carries the labels a replica deploy of ``base`` gives.

        Only such ``.next``/``.prev`` containers are a cut deploy's leftovers: one
        named so by someone else is not the exporter's, and is never touched.
        """
        parsed = self.replicas.naming.parse(base)
        labels = info.labels
        return (
            parsed is not None
            and LABEL_REVISION in labels
            and labels.get(LABEL_APP, "").lower() == parsed.app.lower()
            and labels.get(LABEL_REPLICA) == str(parsed.replica)
        )

    async def _leftover(self, base: str, suffix: str) -> ContainerInfo | None:
        """Return the container ``base + suffix`` when a deploy of ``base`` made it, else None."""
        info = await self._lookup(base + suffix)
        return info if info is not None and self._deployed_as(base, info) else None

    async def _names_to_reconcile(self) -> set[str]:
        """Return every managed name with a ``.next`` or ``.prev`` container left over."""
        names = set()
        for c in await self._driver.container_list():
            for suffix in (NEXT_SUFFIX, PREV_SUFFIX):
                base = c.name.removesuffix(suffix)
                if base != c.name and self._deployed_as(base, c):
                    names.add(base)
        return names

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

    @contextlib.asynccontextmanager
    async def _locked(self, name: str) -> AsyncIterator[None]:
        """Hold ``name``'s deploy lock; the lock is dropped once nobody holds or waits for it."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._lock_users[name] = self._lock_users.get(name, 0) + 1
        try:
            async with lock:
                yield
        finally:
            # Only names with a deploy in flight keep a lock: the map stays bounded.
            self._lock_users[name] -= 1
            if not self._lock_users[name]:
                del self._lock_users[name]
                del self._locks[name]

    async def _lookup(self, name: str) -> ContainerInfo | None:
        """Return the container named exactly ``name``, or None."""
        try:
            info = await self._driver.container_inspect(name)
        except NotFoundError:
            return None
        # The engine also matches id prefixes: only the name itself counts.
        return info if info.name == name else None

    async def reconcile(self, name: str) -> ContainerInfo | None:
        """Finish or undo a deploy of ``name`` that was cut; return ``name``'s container.

        A ``.next`` left over never replaced anything: it is removed. A ``.prev``
        left over is the old revision: when ``<name>`` runs, the swap was done
        and ``.prev`` is removed; otherwise the new one never ran, so it is
        removed and ``.prev`` is renamed back to ``<name>`` and started (the
        deploy stopped it; whether it ran before is not known, and a replica is
        meant to run). Call it under the name's lock.
        """
        nxt = await self._leftover(name, NEXT_SUFFIX)
        if nxt is not None:
            log.warning("replicas: removing %s, left by a cut deploy", nxt.name)
            await self._driver.container_remove(nxt.id)
        current = await self._lookup(name)
        prev = await self._leftover(name, PREV_SUFFIX)
        if prev is None:
            return current
        if current is not None and current.state is ContainerState.RUNNING:
            log.warning("replicas: %s runs; removing %s, left by a cut deploy", name, prev.name)
            await self._driver.container_remove(prev.id)
            return current
        if current is not None:
            log.warning("replicas: %s never ran; removing it to restore %s", name, prev.name)
            await self._driver.container_remove(current.id)
        log.warning("replicas: restoring %s as %s, left by a cut deploy", prev.name, name)
        await self._driver.container_rename(prev.id, name)
        await self._driver.container_start(name)
        return await self._lookup(name)

    async def remove(self, name: str) -> None:
        """Remove ``name`` and any deploy leftovers of it, and forget its replica."""
        async with self._locked(name):
            await self._driver.container_remove(name)
            for suffix in (NEXT_SUFFIX, PREV_SUFFIX):
                found = await self._leftover(name, suffix)
                if found is not None:
                    await self._driver.container_remove(found.id)
            stored = self.replicas.get(name)
            if stored is not None:
                # So that posting the same revision again recreates it.
                self.replicas.forget(name, stored.deploy_revision)

    def _name_of(self, rep: AppReplicaInstance) -> str:
        try:
            return self.replicas.container_name(rep)
        except ValueError as e:
            part, _, message = str(e).partition(": ")
            field = "replica.rep_id" if part == "replica_id" else "app.id"
            raise ReplicaSpecError(
                [{"field": field, "message": message or str(e), "type": "value_error"}]
            ) from e

    async def deploy(self, rep: AppReplicaInstance) -> Deployment:
        """Deploy ``rep`` unless that revision (or a newer one) already runs.

        Raises ReplicaSpecError (invalid, nothing touched),
        ReplicaImageMissingError and ReplicaHostNotReadyError (nothing
        touched), ReplicaStartError (rolled back), DriverError or OSError;
        whatever fails, the running revision stays and nothing is stored.
        """
        name = self._name_of(rep)
        # One deploy per name at a time: a newer revision waits for the older to finish.
        async with self._locked(name):
            current = await self.reconcile(name)
            stored = self.replicas.get(name)
            if stored is not None and rep.deploy_revision <= stored.deploy_revision:
                if current is not None and current.labels.get(LABEL_REVISION) == str(
                    stored.deploy_revision
                ):
                    return Deployment(DeployResult.UNCHANGED, name, rep.deploy_revision)
                # What the store holds no longer exists: the entry is void.
                log.warning(
                    "replicas: %s revision %d is stored but its container is gone; redeploying",
                    name,
                    stored.deploy_revision,
                )
                self.replicas.forget(name, stored.deploy_revision)
            data = rep.model_dump_json(indent=2).encode()
            if (
                current is not None
                and current.state is ContainerState.RUNNING
                and current.labels.get(LABEL_REVISION) == str(rep.deploy_revision)
            ):
                # This revision already runs (a deploy cut after its start): adopt it
                # rather than restart it. An equal revision is the same deployment.
                self._options(rep, name)
                paths = self.pod_paths(name)
                await asyncio.to_thread(prepare_pod_dir, paths, self._sources, self._arch)
                await asyncio.to_thread(write_app_instance, paths, data)
                self.replicas.try_store(rep)
                return Deployment(DeployResult.UNCHANGED, name, rep.deploy_revision)
            info = await self._create(rep, name, current)
            await asyncio.to_thread(write_app_instance, self.pod_paths(name), data)
            self.replicas.try_store(rep)
        result = DeployResult.UPDATED if current is not None else DeployResult.CREATED
        return Deployment(result, name, rep.deploy_revision, info)

    def _options(self, rep: AppReplicaInstance, name: str) -> ContainerCreateOptions:
        try:
            return replica_create_options(rep, name, self.pod_paths(name))
        except ValidationError as e:
            raise ReplicaSpecError(spec_errors(e)) from e

    def _check_host(self, name: str) -> None:
        ininit = self._sources.ininit_src()
        if not os.path.isfile(ininit):
            # The entrypoint runs ininit: without it the container exits at once.
            log.error("replicas: cannot deploy %s: no ininit script at %s", name, ininit)
            raise ReplicaHostNotReadyError(
                f"replica {name} cannot start: the host has no ininit script", ininit
            )

    async def _create(
        self, rep: AppReplicaInstance, name: str, old: ContainerInfo | None
    ) -> ContainerInfo:
        opts = self._options(rep, name)
        self._check_host(name)
        await asyncio.to_thread(prepare_pod_dir, self.pod_paths(name), self._sources, self._arch)
        nxt, prev = name + NEXT_SUFFIX, name + PREV_SUFFIX
        try:
            await self._create_container(opts.model_copy(update={"name": nxt}))
        except NotFoundError as e:
            if "image" not in e.message.lower():
                raise
            raise ReplicaImageMissingError(opts.image, e.message) from e
        old_running = old is not None and old.state is ContainerState.RUNNING
        try:
            # The old one keeps running through both renames; it stops only
            # once the new one is in place, right before the new one starts.
            if old is not None:
                await self._driver.container_rename(old.id, prev)
            await self._driver.container_rename(nxt, name)
            if old_running:
                await self._driver.container_stop(prev)
            try:
                await self._driver.container_start(name)
            except DriverError as e:
                raise _StartFailed("the engine refused its start", e.message) from e
            info = await self._settled(name)
        except BaseException as e:
            old_revision = None if old is None else old.labels.get(LABEL_REVISION, "unknown")
            rollback_error = await self._roll_back(name, old, old_running)
            if isinstance(e, _StartFailed):
                log.error(
                    "replicas: %s revision %d did not start (%s: %s); rolled back",
                    name,
                    rep.deploy_revision,
                    e.reason,
                    e.detail,
                )
                raise ReplicaStartError(
                    name,
                    rep.deploy_revision,
                    e.reason,
                    e.detail,
                    old_revision,
                    old_running,
                    rollback_error,
                ) from e
            raise
        if old is not None:
            await self._driver.container_remove(old.id)
        return info

    async def _settled(self, name: str) -> ContainerInfo:
        """Return ``name`` once it stayed up ``start_settle_seconds``; _StartFailed if not."""
        first = await self._driver.container_inspect(name)
        deadline = time.monotonic() + self._start_settle
        info = first
        while True:
            if info.state is not ContainerState.RUNNING or (info.pid, info.started) != (
                first.pid,
                first.started,
            ):
                raise _StartFailed(
                    f"it exited right after start (state {info.status or info.state.value})",
                    f"its entrypoint {' '.join(container_cmd())} ended at once: check the "
                    "ininit script under --host.prefix and that the image has /bin/sh",
                )
            if time.monotonic() >= deadline:
                return info
            await asyncio.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))
            info = await self._driver.container_inspect(name)

    async def _roll_back(
        self, name: str, old: ContainerInfo | None, old_running: bool
    ) -> str | None:
        """Put the old container back as ``name``; return why that failed, or None."""
        try:
            for suffix in (NEXT_SUFFIX, ""):
                found = await self._leftover(name, suffix)
                if found is not None and (old is None or found.id != old.id):
                    await self._driver.container_remove(found.id)
            if old is not None:
                if await self._lookup(name) is None:
                    await self._driver.container_rename(old.id, name)
                if old_running:
                    await self._driver.container_start(name)
        except DriverError as e:
            log.error("replicas: rolling %s back failed: %s", name, e)
            return str(e)
        return None


class _StartFailed(Exception):
    """The new container did not start or did not stay up (inside _create only)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
