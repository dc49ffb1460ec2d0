"""The in-container layout of a sysinner pod and where it lives on the host.

Inside the container everything sysinner owns sits under :data:`SYSINNER_DIR`;
on the host the same files sit under the pod dir that :class:`PodPaths` names,
which is bind-mounted in. :class:`HostSourcePaths` names where the host keeps
the ininit script and the per-architecture inagent binary that are copied in.

On the host the home dir and the sysinner dir are siblings in the pod dir
(``<pod>/home`` at ``/home``, ``<pod>/sysinner`` at ``/home/action/.sysinner``),
not nested as upstream's layout has it: the tenant writes its home, and a
sysinner dir inside it could be renamed or replaced by a symlink to any host
dir, which the next deploy would write into and mount (issue 12, item 3).
The exporter's own record of the deployed instance lies beside both, where
no container can write.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

HOME_DIR = "/home/action"
SYSINNER_DIR = "/home/action/.sysinner"
APP_INSTANCE_FILE = "/home/action/.sysinner/app_instance.json"
ININIT_FILE = "/home/action/.sysinner/ininit"
INAGENT_FILE = "/home/action/.sysinner/inagent"
INAGENT_SOCK = "unix:/home/action/.sysinner/inagent.sock"
CONTAINER_ENTRYPOINT = "/bin/sh"

#: Directories created on container initialization.
INIT_DIRS: tuple[str, ...] = (
    "/home/action/local/bin",
    "/home/action/local/share",
    "/home/action/local/profile.d",
    "/home/action/var/tmp",
    "/home/action/var/log",
    "/home/action/.ssh",
)


def container_cmd() -> list[str]:
    """Return the container entrypoint command: the shell running the ininit script."""
    return [CONTAINER_ENTRYPOINT, ININIT_FILE]


@dataclass(frozen=True)
class HostSourcePaths:
    """Where the host installation (``prefix``) keeps files copied into pods."""

    prefix: str

    def ininit_src(self) -> str:
        """Return the host path of the ininit script."""
        return posixpath.join(self.prefix, "cmd", "inagent", "ininit")

    def inagent_src(self, arch: str) -> str:
        """Return the host path of the inagent binary for ``arch`` (e.g. ``amd64``)."""
        return posixpath.join(self.prefix, "bin", f"inagent-linux-{arch}")


@dataclass(frozen=True)
class PodPaths:
    """The host paths of one container's pod dir under ``pod_base``."""

    pod_base: str
    container_name: str

    def __post_init__(self) -> None:
        # The name becomes a path component: refuse anything that could step
        # out of pod_base.
        name = self.container_name
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            raise ValueError(f"container_name: {name!r} is not a single path component")

    def container_pod_dir(self) -> str:
        """Return the container's own directory on the host."""
        return posixpath.join(self.pod_base, self.container_name)

    def opt_dir(self) -> str:
        """Return the host directory mounted at ``/opt``."""
        return posixpath.join(self.container_pod_dir(), "opt")

    def home_dir(self) -> str:
        """Return the host directory mounted at ``/home``."""
        return posixpath.join(self.container_pod_dir(), "home")

    def sysinner_dir(self) -> str:
        """Return the host side of :data:`SYSINNER_DIR`: a sibling of the home dir."""
        return posixpath.join(self.container_pod_dir(), "sysinner")

    def app_instance_file(self) -> str:
        """Return the host side of :data:`APP_INSTANCE_FILE`."""
        return posixpath.join(self.sysinner_dir(), "app_instance.json")

    def instance_record_file(self) -> str:
        """Return the exporter's own copy of the instance, out of every container's reach."""
        return posixpath.join(self.container_pod_dir(), "app_instance.json")

    def ininit_file(self) -> str:
        """Return the host side of :data:`ININIT_FILE`."""
        return posixpath.join(self.sysinner_dir(), "ininit")

    def inagent_file(self) -> str:
        """Return the host side of :data:`INAGENT_FILE`."""
        return posixpath.join(self.sysinner_dir(), "inagent")

    def legacy_sysinner_dir(self) -> str:
        """Return where upstream's layout nests the sysinner dir (inside the tenant's home)."""
        return posixpath.join(self.home_dir(), "action", ".sysinner")

    def host_path(self, container_path: str) -> str:
        """Return where an in-container path under ``/home`` lives on the host."""
        if not container_path.startswith("/"):
            # relpath would resolve a relative path against our own cwd.
            raise ValueError(f"container_path: {container_path!r} is not absolute")
        clean = posixpath.normpath(container_path)
        if clean == SYSINNER_DIR or clean.startswith(SYSINNER_DIR + "/"):
            return self.sysinner_dir() + clean[len(SYSINNER_DIR) :]
        rel = posixpath.relpath(clean, "/home")
        # "..x" is a name under /home; only ".." itself or "../" steps out.
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"container_path: {container_path!r} is not under /home")
        return self.home_dir() if rel == "." else posixpath.join(self.home_dir(), rel)
