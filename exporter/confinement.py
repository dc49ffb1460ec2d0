"""What the lifecycle API refuses to do on the host's behalf.

Whoever holds the API token can create containers, and code inside a
replica can write wherever its mounts let it. A container with the host's
``/``, ``/etc`` or the Docker socket bind-mounted is root on the host, and
the engine resolves a bind's source path again at every start of the
container (the API's start, a remediation restart, the engine's own restart
policy, a reboot). So checking a path once is not enough; the invariant is
structural:

    No container created through the API (or a replica deploy) can change
    what another mount, its own or another container's, resolves to,
    whoever starts it and when.

:class:`MountPolicy` keeps it with four rules, under one lock so that two
creates through this exporter cannot pass the check side by side:

1. A bind source lies strictly under a configured root (a mount prefix for
   the API, the pod base for replicas), written without symlinks: the walk
   from the root (:mod:`exporter.safefs`) refuses any symlink or
   non-directory below it, and the path sent to the engine is exactly the
   path walked.
2. No source is a root, or an ancestor of one: the dirs the exporter walks
   from stay out of every container's reach.
3. The sources of all the engine's containers that lie under a root form an
   antichain: a new source that is a strict ancestor or strict descendant of
   an existing one (or of another mount of the same create) is refused
   (equal is fine). A writable view of a dir on another mount's resolution
   path is exactly what lets a container swap a component for a symlink.
4. Missing sources are made as directories by the exporter, through the same
   walk; ``uid``/``gid`` are applied with ``fchown`` on the fd the walk
   opened; the engine is given ``Mounts`` of type bind, which it refuses
   (rather than creates, as root, following symlinks) when the source is
   missing at create or at any later start.

The old checks stay as defence in depth: nothing from ``/``, ``/etc``,
``/proc``, ``/sys``, ``/dev``, ``/boot``, nothing that would expose a
protected file (the engine's socket, the exporter's own state and token).
Images can be limited to an allow-list of fnmatch patterns.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exporter import safefs
from exporter.config import Settings
from exporter.drivers.base import Driver
from exporter.errors import ExporterError
from exporter.models import ContainerCreateOptions, ContainerInfo, MountBind
from exporter.state import StateStore

#: Host trees no bind mount may come from, whatever the prefixes say.
DENIED_TREES: tuple[str, ...] = ("/etc", "/proc", "/sys", "/dev", "/boot")
#: Where engines keep their sockets; protected in addition to the configured one.
DOCKER_SOCKETS: tuple[str, ...] = ("/var/run/docker.sock", "/run/docker.sock")


class Forbidden(ExporterError):
    """The API's policy refuses the request (unmanaged name, mount, image)."""


def _at_or_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _nested(a: str, b: str) -> bool:
    """Return True when one of two different paths lies inside the other."""
    return a != b and (_at_or_under(a, b) or _at_or_under(b, a))


@dataclass(frozen=True)
class Source:
    """A bind source the policy located: its root, its components below it, its path."""

    given: str
    root: str
    parts: tuple[str, ...]

    @property
    def path(self) -> str:
        """Return the canonical host path: the one walked and the one the engine is given."""
        return posixpath.join(self.root, *self.parts)


class MountPolicy:
    """Bind-mount sources under ``prefixes`` (API) or ``pod_base`` (replicas), as an antichain."""

    def __init__(
        self,
        prefixes: Iterable[str],
        protected: Iterable[str] = DOCKER_SOCKETS,
        *,
        pod_base: str | None = None,
        host_prefix: str | None = None,
    ) -> None:
        given = [posixpath.normpath(p) for p in prefixes]
        # Resolved once, at start: the host's path to a root is trusted, what lies below is not.
        self.prefixes = tuple(os.path.realpath(p) for p in given)
        self._spellings = tuple((g, r) for g, r in zip(given, self.prefixes, strict=True) if g != r)
        self.pod_base = os.path.realpath(pod_base) if pod_base is not None else None
        self.roots = tuple(dict.fromkeys([*self.prefixes, *filter(None, [self.pod_base])]))
        self.protected = tuple(os.path.realpath(p) for p in protected)
        # What every replica runs (ininit, inagent) is copied from here: no container may write it.
        self.host_prefix = os.path.realpath(host_prefix) if host_prefix is not None else None
        # One create at a time through this exporter: check, chown and create are one step.
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, protected: Iterable[str] = ()) -> MountPolicy:
        """Return the policy the settings describe, ``protected`` added to the defaults."""
        return cls(
            [str(p) for p in settings.mount_prefixes()],
            protected=[
                *DOCKER_SOCKETS,
                *protected,
                str(StateStore.file_in(settings.state_dir)),
                *([str(settings.api_token_file)] if settings.api_token_file else []),
            ],
            pod_base=str(settings.pod_base_dir),
            host_prefix=str(settings.host_prefix),
        )

    # -- the checks on the path alone -----------------------------------

    def locate(self, mount: MountBind, *, replica: bool = False) -> Source:
        """Return where ``mount``'s source lies (rules 1-2 on the text); Forbidden names why."""
        given = mount.host_path
        path = posixpath.normpath(given)
        for spelled, real in self._spellings:
            if _at_or_under(path, spelled):
                path = real + path[len(spelled) :]
        shown = given if path == given else f"{given} (resolves to {path})"
        if path == "/" or path.startswith("//"):
            raise Forbidden(f"bind mount {shown}: the host's root cannot be mounted")
        for tree in DENIED_TREES:
            if _at_or_under(path, tree):
                raise Forbidden(f"bind mount {shown}: {tree} cannot be mounted")
        for protected in self.protected:
            if _at_or_under(protected, path):
                raise Forbidden(f"bind mount {shown}: it would expose {protected}")
        hp = self.host_prefix
        if hp is not None and (_at_or_under(path, hp) or _at_or_under(hp, path)):
            raise Forbidden(f"bind mount {shown}: it would expose the host installation {hp}")
        for root in self.roots:
            if _at_or_under(root, path):
                raise Forbidden(
                    f"bind mount {shown}: it would expose {root}, which the exporter "
                    "lays out and checks mounts from"
                )
        allowed = (self.pod_base,) if replica and self.pod_base else self.prefixes
        for root in allowed:
            if _at_or_under(path, root):
                return Source(given, root, tuple(safefs.components(root, path)))
        shown_allowed = ", ".join(allowed) or "(none)"
        raise Forbidden(f"bind mount {shown}: not under an allowed prefix ({shown_allowed})")

    def check(self, mount: MountBind) -> str:
        """Return the canonical host path of an API mount; Forbidden names why it is refused."""
        return self.locate(mount).path

    def check_all(self, mounts: Sequence[MountBind]) -> None:
        """Check every API mount on its text; Forbidden for the first refused one."""
        for m in mounts:
            self.check(m)

    def _under_roots(self, containers: Iterable[ContainerInfo]) -> list[tuple[str, str]]:
        """Return (container, source) for every mount source strictly under a root."""
        found = []
        for c in containers:
            for source in c.mount_sources:
                clean = posixpath.normpath(source)
                if any(clean != r and _at_or_under(clean, r) for r in self.roots):
                    found.append((c.name, clean))
        return found

    def check_antichain(
        self, sources: Sequence[Source], existing: Sequence[tuple[str, str]]
    ) -> None:
        """Refuse a source nested in another's (rule 3); Forbidden names both."""
        seen = list(existing)
        for s in sources:
            for owner, other in seen:
                if _nested(s.path, other):
                    how = "lies inside" if _at_or_under(s.path, other) else "contains"
                    raise Forbidden(
                        f"bind mount {s.given}: {s.path} {how} {other}, which {owner} mounts; "
                        "a mount may not be on another mount's path"
                    )
            seen.append(("this container", s.path))

    # -- the filesystem and the engine ------------------------------------

    def _prepare(self, sources: Sequence[Source], mounts: Sequence[MountBind]) -> None:
        """Walk to each source, making missing dirs; chown on the fd the walk opened."""
        for s, m in zip(sources, mounts, strict=True):
            try:
                with safefs.walked(
                    s.root, s.parts[:-1], create=True, create_root=s.root == self.pod_base
                ) as parent:
                    fd, _ = safefs.open_leaf(parent, s.parts[-1], create_dir=True)
                    try:
                        if m.uid or m.gid:
                            safefs.chown_fd(fd, m.uid or -1, m.gid or -1)
                    finally:
                        os.close(fd)
            except safefs.UnsafePathError as e:
                raise Forbidden(f"bind mount {s.given}: refused, {e}") from e
            except OSError as e:
                raise Forbidden(f"bind mount {s.given}: cannot prepare it: {e}") from e

    async def create(
        self, driver: Driver, opts: ContainerCreateOptions, *, replica: bool = False
    ) -> ContainerInfo:
        """Create the container once its mounts pass every rule; Forbidden names the first refusal.

        ``replica``: the mounts must lie under the pod base rather than a prefix.
        """
        sources = [self.locate(m, replica=replica) for m in opts.mounts]
        canonical = [
            m.model_copy(update={"host_path": s.path})
            for s, m in zip(sources, opts.mounts, strict=True)
        ]
        async with self._lock:
            if sources:
                self.check_antichain(sources, self._under_roots(await driver.container_list()))
                await asyncio.to_thread(self._prepare, sources, opts.mounts)
            created = await driver.container_create(opts.model_copy(update={"mounts": canonical}))
            if sources:
                await self._recheck(driver, created, sources)
        return created

    async def _recheck(
        self, driver: Driver, created: ContainerInfo, sources: Sequence[Source]
    ) -> None:
        """Undo ``created`` when a container made meanwhile elsewhere breaks the antichain.

        The lock covers this exporter only; another process creating at the same
        moment is caught here: of two nested creates at least one sees the other.
        """
        others = [c for c in await driver.container_list() if c.id != created.id]
        try:
            self.check_antichain(sources, self._under_roots(others))
        except Forbidden:
            with contextlib.suppress(ExporterError):
                await driver.container_remove(created.id)
            raise


def check_image(image: str, allowlist: Sequence[str]) -> None:
    """Return when ``image`` matches the allow-list (or it is empty); Forbidden otherwise."""
    if allowlist and not any(fnmatch.fnmatchcase(image, pattern) for pattern in allowlist):
        raise Forbidden(f"image {image!r} is not in the image allow-list")


def check_managed(name: str, is_managed: bool) -> None:
    """Return when ``name`` is a managed container name; Forbidden otherwise."""
    if not is_managed:
        raise Forbidden(
            f"container {name!r} is not managed by this exporter (its name does not match "
            "the naming pattern); the API acts only on managed containers"
        )
