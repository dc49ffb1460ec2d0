"""What the lifecycle API refuses to do on the host's behalf.

Whoever holds the API token can create containers; a container with the
host's ``/``, ``/etc`` or the Docker socket bind-mounted is root on the host.
So bind mounts must resolve (symlinks and ``..`` followed, with
``os.path.realpath``) to a path at or under a configured prefix, never into
the kernel's or the system's config trees, and never to a dir that contains
a protected file (the engine's socket, the exporter's own state and token).
Images can be limited to an allow-list of fnmatch patterns.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence

from exporter.errors import ExporterError
from exporter.models import MountBind

#: Host trees no bind mount may come from, whatever the prefixes say.
DENIED_TREES: tuple[str, ...] = ("/etc", "/proc", "/sys", "/dev", "/boot")
#: Where engines keep their sockets; protected in addition to the configured one.
DOCKER_SOCKETS: tuple[str, ...] = ("/var/run/docker.sock", "/run/docker.sock")


class Forbidden(ExporterError):
    """The API's policy refuses the request (unmanaged name, mount, image)."""


def _at_or_under(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([path, root]) == root


class MountPolicy:
    """Bind-mount sources allowed at or under ``prefixes``, protected paths excepted."""

    def __init__(self, prefixes: Iterable[str], protected: Iterable[str] = DOCKER_SOCKETS) -> None:
        # Resolve the prefixes too: a prefix that is itself a symlink means its target.
        self.prefixes = tuple(os.path.realpath(p) for p in prefixes)
        self.protected = tuple(os.path.realpath(p) for p in protected)

    def check(self, mount: MountBind) -> str:
        """Return the resolved host path of ``mount``; Forbidden names why it is refused."""
        given = mount.host_path
        try:
            real = os.path.realpath(given)
        except OSError as e:
            # e.g. /proc/1/root: a path that cannot be resolved cannot be shown to be allowed.
            raise Forbidden(f"bind mount {given}: cannot resolve it: {e.strerror or e}") from e
        shown = given if real == given else f"{given} (resolves to {real})"
        if real == "/":
            raise Forbidden(f"bind mount {shown}: the host's root cannot be mounted")
        for tree in DENIED_TREES:
            if _at_or_under(real, tree):
                raise Forbidden(f"bind mount {shown}: {tree} cannot be mounted")
        for path in self.protected:
            if _at_or_under(path, real):
                raise Forbidden(f"bind mount {shown}: it would expose {path}")
        if not any(_at_or_under(real, prefix) for prefix in self.prefixes):
            allowed = ", ".join(self.prefixes) or "(none)"
            raise Forbidden(f"bind mount {shown}: not under an allowed prefix ({allowed})")
        return real

    def check_all(self, mounts: Sequence[MountBind]) -> None:
        """Check every mount; Forbidden for the first refused one."""
        for m in mounts:
            self.check(m)


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
