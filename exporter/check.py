"""``sysinner-exporter check``: could this exporter start here and do its job? In a few lines.

Each check yields one :class:`Finding`; the command prints them and exits 0
when every one is fine. Invalid settings never get this far: they stop the
command line with exit 2 and the flag and variable named.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter import safefs
from exporter.config import Settings, flag_name
from exporter.confinement import MountPolicy
from exporter.drivers.base import Driver
from exporter.errors import DriverError, DriverTimeoutError, ExporterError, NotFoundError
from exporter.models import ContainerCreateOptions, MountBind
from exporter.sources.base import StatsSource

#: A healthy engine answers a ping in milliseconds; a check must not hang on a sick one.
ENGINE_TIMEOUT = 3.0

#: What to do about the ways the engine's socket fails, by errno.
_ENGINE_HINTS = {
    errno.EACCES: "this user may not use the socket: in a container add the socket's group, "
    "--group-add $(stat -c %g /var/run/docker.sock); on the host run as root or as a "
    "member of the socket's group",
    errno.ENOENT: "no socket at that path: is dockerd running, and is the socket mounted "
    "into the container (-v /var/run/docker.sock:/var/run/docker.sock)?",
    errno.ECONNREFUSED: "nothing listens there: the engine is stopped (a stale socket file?)",
}


@dataclass(frozen=True)
class Finding:
    """One line of the check: what was checked, whether it is fine, and the detail."""

    what: str
    ok: bool
    detail: str
    hint: str = ""


def _errno_of(error: BaseException) -> int | None:
    """Return the errno of the first OSError in ``error``'s chain of causes."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        seen = seen.__cause__
    return None


async def check_engine(driver: Driver, where: str, within: float = ENGINE_TIMEOUT) -> Finding:
    """Return whether the engine answers a ping within ``within`` seconds, and its API version."""
    try:
        async with asyncio.timeout(within):
            await driver.ping()
            info = await driver.info()
    except TimeoutError:
        return Finding(
            "engine",
            False,
            f"no answer from {where} within {within:g}s",
            "the engine is overloaded or hung; `docker version` shows whether it answers",
        )
    except DriverTimeoutError as e:
        return Finding("engine", False, str(e), "the engine is overloaded or hung")
    except ExporterError as e:
        code = _errno_of(e)
        return Finding("engine", False, str(e), _ENGINE_HINTS.get(code or 0, ""))
    return Finding(
        "engine", True, f"Docker Engine {info.version}, API {info.api_version}, at {where}"
    )


def check_stats_source(build: Callable[[], StatsSource]) -> Finding:
    """Return which stats source the settings would use, or why none can be built."""
    try:
        source = build()
    except (ExporterError, OSError) as e:
        return Finding(
            "stats source",
            False,
            str(e),
            f"check {flag_name('proc_root')} / {flag_name('cgroup_root')} and the read-only "
            "mounts of /proc and /sys/fs/cgroup, or use --stats.source=docker",
        )
    return Finding("stats source", True, source.name)


def check_port(host: str, port: int) -> Finding:
    """Return whether ``host:port`` can be bound now (as the server would, reusing TIME_WAIT)."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as e:
        hints = {
            errno.EADDRINUSE: "another process listens there (perhaps a running exporter: "
            f"`ss -ltnp`); pick another port with {flag_name('web_listen_address')}",
            errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
            errno.EADDRNOTAVAIL: "no interface of this host has that address",
        }
        hint = hints.get(e.errno or 0, "")
        return Finding("listen port", False, f"cannot bind {shown}: {e.strerror or e}", hint)
    return Finding("listen port", True, f"{shown} is free")


#: An image no engine has: a probe create is refused for it after the mounts are validated.
PROBE_IMAGE = "sysinner-exporter-probe/absent:none"
SAME_PATH_HINT = (
    "in a container, bind-mount the pod base and every mount prefix at the same path as on "
    "the host (-v /var/lib/sysinner-exporter/pods:/var/lib/sysinner-exporter/pods), writable "
    "by the exporter's user: the engine resolves mount sources on the host"
)


async def _engine_sees(driver: Driver, source: str) -> bool | None:
    """Return whether the engine finds ``source`` on its host; None when it cannot tell.

    A create with a bind mount of ``source`` and an image no engine has: the
    engine validates mounts first ("bind source path does not exist", 400),
    then looks the image up (404). Nothing is created either way.
    """
    opts = ContainerCreateOptions(
        name=f"sysinner-exporter-probe-{secrets.token_hex(6)}",
        image=PROBE_IMAGE,
        mounts=[MountBind(host_path=source, container_path="/probe", read_only=True)],
    )
    try:
        created = await driver.container_create(opts)
    except NotFoundError:
        return True
    except DriverError as e:
        if e.status == 400 and "does not exist" in e.message:
            return False
        raise
    await driver.container_remove(created.id)  # an engine that had the image after all
    return True


async def check_host_paths(
    settings: Settings, driver: Driver, within: float = ENGINE_TIMEOUT
) -> Finding:
    """Return whether the engine sees the pod base and mount prefixes at the paths we see.

    In each, a uniquely named probe dir is made and the engine asked to mount
    it: a source it cannot find means this process sees another tree there
    (the exporter runs in a container with the dir not mounted at the same
    path), where every check of the mount policy would be made in vain.
    """
    if settings.api_token is None and settings.api_token_file is None:
        return Finding("host paths", True, "lifecycle API off: no pod dir or prefix in use")
    policy = MountPolicy.from_settings(settings)
    roots = policy.roots
    bad: list[str] = []
    try:
        async with asyncio.timeout(within * (1 + 2 * len(roots))):
            # A path that cannot exist first: an engine that checks the image
            # before the mounts would answer 404 to every probe.
            if await _engine_sees(driver, f"/nonexistent-{secrets.token_hex(8)}"):
                return Finding(
                    "host paths", False, "this engine cannot tell whether a mount source exists"
                )
            for root in roots:
                name = f".sysinner-exporter-probe-{secrets.token_hex(8)}"
                fd = safefs.open_root(root, create=root == policy.pod_base)
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    try:
                        if not await _engine_sees(driver, f"{root}/{name}"):
                            bad.append(root)
                    finally:
                        safefs.remove_dir(fd, name)
                finally:
                    os.close(fd)
    except TimeoutError:
        return Finding("host paths", False, f"the engine did not answer within {within:g}s")
    except OSError as e:
        return Finding("host paths", False, f"cannot make a probe dir: {e}", SAME_PATH_HINT)
    except ExporterError as e:
        return Finding("host paths", False, f"cannot probe: {e}")
    if bad:
        return Finding(
            "host paths",
            False,
            f"the engine does not see {', '.join(bad)} as this process does",
            SAME_PATH_HINT,
        )
    return Finding("host paths", True, f"the engine sees {', '.join(roots)} as we do")


async def check_containers(settings: Settings, driver: Driver) -> Finding:
    """Return how many containers would be tracked, and how many unmanaged ones left out."""
    try:
        async with asyncio.timeout(ENGINE_TIMEOUT):
            listed = await driver.container_list()
    except (TimeoutError, ExporterError) as e:
        return Finding("containers", False, f"cannot list containers: {e or 'timed out'}")
    naming = settings.naming()
    managed = sum(1 for c in listed if naming.parse(c.name) is not None)
    unmanaged = len(listed) - managed
    if settings.collect_all or not unmanaged:
        return Finding(
            "containers", True, f"{len(listed) if settings.collect_all else managed} tracked"
        )
    return Finding(
        "containers",
        True,
        f"{managed} managed tracked; {unmanaged} unmanaged left out "
        f"({flag_name('collect_all')} includes them)",
    )


def check_settings(settings: Settings) -> Finding:
    """Return the settings that differ from the defaults (secrets masked)."""
    given = sorted(settings.model_fields_set)
    if not given:
        return Finding("settings", True, "all defaults")
    shown = ", ".join(f"{flag_name(f)}={getattr(settings, f)!s}" for f in given)
    return Finding("settings", True, f"valid; set by flag or environment: {shown}")


async def run_checks(
    settings: Settings,
    driver: Driver,
    where: str,
    build_stats_source: Callable[[], StatsSource],
) -> list[Finding]:
    """Return every finding, in the order they are printed."""
    host, port = settings.listen()
    engine = await check_engine(driver, where)
    findings = [
        engine,
        check_stats_source(build_stats_source),
        check_port(host, port),
        await check_host_paths(settings, driver),
    ]
    if engine.ok:  # without an engine there is nothing to count, and it is told already
        findings.append(await check_containers(settings, driver))
    return [*findings, check_settings(settings)]


def render(findings: Sequence[Finding]) -> str:
    """Return the findings as aligned lines, hints indented below, and a verdict."""
    width = max(len(f.what) for f in findings) + 2
    lines = []
    for f in findings:
        lines.append(f"{f.what:<{width}}{'ok' if f.ok else 'FAIL':<6}{f.detail}")
        if f.hint and not f.ok:
            lines.append(f"{'':<{width + 6}}hint: {f.hint}")
    problems = sum(not f.ok for f in findings)
    lines.append("all good" if not problems else f"{problems} problem{'s' if problems > 1 else ''}")
    return "\n".join(lines) + "\n"
