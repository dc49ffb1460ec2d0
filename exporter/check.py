"""``sysinner-exporter check``: could this exporter start here and do its job? In a few lines.

Each check yields one :class:`Finding`; the command prints them and exits 0
when none fails (a warning, such as stats that will come from the engine
because the host's /proc is not mounted, is printed and still exits 0).
It says what ``serve`` would log: the stats source and why, where one read of
the running containers' stats came from, the web config, every listen
address. Invalid settings never get this far: they stop the command line
with exit 2 and the flag and variable named.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import ssl
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter import safefs
from exporter.config import Settings, deprecated_variables, env_name, flag_name
from exporter.confinement import MountPolicy
from exporter.drivers.base import Driver
from exporter.errors import DriverError, DriverTimeoutError, ExporterError, NotFoundError
from exporter.listeners import ListenError, bind, hint, shown
from exporter.models import ContainerCreateOptions, ContainerInfo, ContainerState, MountBind
from exporter.sources.base import SourcedStats, StatsSource
from exporter.webconfig import WebConfigWatcher

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
#: The same for an engine reached over tcp://, where there is no socket file.
_TCP_ENGINE_HINTS = {
    errno.ECONNREFUSED: "nothing listens at that host and port: is dockerd running with "
    "-H tcp://..., and does DOCKER_HOST name its address?",
    errno.EHOSTUNREACH: "no route to that host: check DOCKER_HOST",
    errno.ENETUNREACH: "no route to that host: check DOCKER_HOST",
}

#: How a stats sample's source is said ("nowhere": the read failed).
_SOURCE_WORDS = {"cgroup": "the kernel's cgroup files", "docker": "the engine"}

#: Running containers whose stats ``check`` reads once, as a poll would.
STATS_SAMPLE = 20


@dataclass(frozen=True)
class Finding:
    """One line of the check: what was checked, whether it is fine, and the detail."""

    what: str
    ok: bool
    detail: str
    hint: str = ""
    #: Fine but worth a look (serve logs it as a warning); printed with its hint.
    warn: bool = False


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
        hints = _TCP_ENGINE_HINTS if where.startswith("tcp://") else _ENGINE_HINTS
        return Finding("engine", False, str(e), hints.get(code or 0, ""))
    return Finding(
        "engine", True, f"Docker Engine {info.version}, API {info.api_version}, at {where}"
    )


def check_stats_source(
    build: Callable[[], tuple[StatsSource, str]],
) -> tuple[Finding, StatsSource | None]:
    """Return which stats source the settings would use and why (as serve logs it), or why not."""
    try:
        source, why = build()
    except (ExporterError, OSError) as e:
        return Finding(
            "stats source",
            False,
            str(e),
            f"check {flag_name('proc_root')} / {flag_name('cgroup_root')} and the read-only "
            "mounts of /proc and /sys/fs/cgroup, or use --stats.source=docker",
        ), None
    return Finding("stats source", True, f"{source.name} ({why})"), source


async def _inspect_running(driver: Driver, ids: Sequence[str]) -> list[ContainerInfo]:
    """Return the inspects of ``ids`` still running (one may go between list and inspect)."""
    found = []
    for cid in ids:
        try:
            info = await driver.container_inspect(cid)
        except NotFoundError:
            continue
        if info.state is ContainerState.RUNNING:
            found.append(info)
    return found


async def check_stats_read(
    driver: Driver,
    source: StatsSource,
    exported: Callable[[str], bool] = lambda name: True,
    within: float = ENGINE_TIMEOUT * 3,
) -> Finding:
    """Return where one read of (up to STATS_SAMPLE) exported containers' stats came from."""
    try:
        async with asyncio.timeout(within):
            listed = await driver.container_list()
            running = [
                c.id for c in listed if c.state is ContainerState.RUNNING and exported(c.name)
            ][:STATS_SAMPLE]
            # The list answer has no pids; the poll inspects, and so does this.
            inspected = await _inspect_running(driver, running)
            results = await source.read_many(inspected)
    except (TimeoutError, ExporterError) as e:
        return Finding("stats read", False, f"could not read stats: {e or 'timed out'}")
    # A container that stopped or went meanwhile is skipped, as a poll skips it.
    results = {k: r for k, r in results.items() if not isinstance(r, NotFoundError)}
    if not results:
        return Finding("stats read", True, "no running container to read")
    failures = [r for r in results.values() if not isinstance(r, SourcedStats)]
    by_source = Counter(
        r.source if isinstance(r, SourcedStats) else "nowhere" for r in results.values()
    )
    detail = f"{len(results)} running container{'s' * (len(results) > 1)}: " + ", ".join(
        f"{n} from {_SOURCE_WORDS.get(name, name)}" for name, n in sorted(by_source.items())
    )
    if failures:
        # As a poll: a container whose read fails (often one stopping right now) is a
        # warning in serve's log; only when no read succeeds is something wrong here.
        every = len(failures) == len(results)
        return Finding(
            "stats read", not every, detail, f"the first failure: {failures[0]}", warn=not every
        )
    if "cgroup" in source.name and not by_source.get("cgroup"):
        # What serve logs as a warning at its first poll.
        return Finding(
            "stats read",
            True,
            detail,
            "no container's pid is under the proc root: not the host's /proc. In a "
            "container add --pid=host and -v /proc:/host/proc:ro with "
            f"{flag_name('proc_root')}=/host/proc to read stats from the kernel",
            warn=True,
        )
    return Finding("stats read", True, detail)


def check_web_config(load: Callable[[], WebConfigWatcher | None]) -> Finding:
    """Return what --web.config.file turns on, or why it does not load."""
    try:
        watcher = load()
    except ExporterError as e:
        return Finding("web config", False, str(e))
    if watcher is None:
        return Finding("web config", True, "none: plain HTTP, no basic auth")
    return Finding("web config", True, f"{watcher.path}: {watcher.current().describe()}")


def check_api(settings: Settings, read_token: Callable[[], str | None]) -> Finding:
    """Return whether serve would turn the lifecycle API on, as its start-up line says."""
    try:
        token = read_token()
    except ExporterError as e:
        return Finding("api", False, str(e))
    if not token:
        return Finding(
            "api",
            True,
            f"off: set {flag_name('api_token_file')} or {env_name('api_token')} to turn it on",
        )
    return Finding(
        "api",
        True,
        f"on (state in {settings.state_dir}, pods in {settings.pod_base_dir})",
    )


def _answering_exporter(host: str, port: int) -> bool:
    """Return whether a sysinner-exporter answers on ``host:port`` (http or https)."""
    reachable = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # only to recognise it, nothing is sent
    for scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(
                f"{scheme}://{shown(reachable, port)}/",
                timeout=2,
                context=insecure if scheme == "https" else None,
            ) as answer:
                return b"sysinner-exporter" in answer.read(4096)
        except urllib.error.HTTPError as e:
            # Basic auth in front of the landing page: the realm still names it.
            return 'realm="sysinner-exporter"' in e.headers.get("WWW-Authenticate", "")
        except (OSError, ValueError):
            continue
    return False


def check_port(host: str, port: int) -> Finding:
    """Return whether ``host:port`` can be bound now, or is a running exporter's own."""
    where = shown(host, port)
    try:
        bind(host, port, listen=False).close()
    except ListenError as e:
        if e.errno == errno.EADDRINUSE and _answering_exporter(host, port):
            # `docker exec ... check` beside the exporter it checks: that is its port.
            return Finding("listen port", True, f"{where} is served by a running sysinner-exporter")
        reason = errno.errorcode.get(e.errno or 0, "")
        text = {"EADDRINUSE": "Address already in use"}.get(reason, str(e))
        return Finding("listen port", False, f"cannot bind {where}: {text}", hint(e.errno, port))
    return Finding("listen port", True, f"{where} is free")


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
    old = deprecated_variables()
    if not given:
        return Finding("settings", True, "all defaults")
    values = ", ".join(f"{flag_name(f)}={_shown_value(getattr(settings, f))}" for f in given)
    detail = f"valid; set by flag or environment: {values}"
    if old:
        renames = ", ".join(f"{a} -> {b}" for a, b in old)
        return Finding("settings", True, detail, f"deprecated variables: {renames}", warn=True)
    return Finding("settings", True, detail)


def _shown_value(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


async def run_checks(
    settings: Settings,
    driver: Driver,
    where: str,
    build_stats_source: Callable[[], tuple[StatsSource, str]],
    web_config_check: Callable[[], WebConfigWatcher | None] = lambda: None,
    read_token: Callable[[], str | None] = lambda: None,
) -> list[Finding]:
    """Return every finding, in the order they are printed."""
    engine = await check_engine(driver, where)
    source_finding, source = check_stats_source(build_stats_source)
    findings = [engine, source_finding]
    if engine.ok and source is not None:
        naming = settings.naming()

        def exported(name: str) -> bool:
            return settings.collect_all or naming.parse(name) is not None

        findings.append(await check_stats_read(driver, source, exported))
    findings.append(check_api(settings, read_token))
    findings.append(check_web_config(web_config_check))
    findings.extend(check_port(host, port) for host, port in settings.listen_addresses())
    findings.append(await check_host_paths(settings, driver))
    if engine.ok:  # without an engine there is nothing to count, and it is told already
        findings.append(await check_containers(settings, driver))
    findings.append(check_settings(settings))
    return findings


def render(findings: Sequence[Finding]) -> str:
    """Return the findings as aligned lines, hints indented below, and a verdict."""
    width = max(len(f.what) for f in findings) + 2
    lines = []
    for f in findings:
        status = "FAIL" if not f.ok else "warn" if f.warn else "ok"
        lines.append(f"{f.what:<{width}}{status:<6}{f.detail}")
        if f.hint and (f.warn or not f.ok):
            lines.append(f"{'':<{width + 6}}hint: {f.hint}")
    problems = sum(not f.ok for f in findings)
    warnings = sum(f.ok and f.warn for f in findings)
    verdict = f"{problems} problem{'s' if problems > 1 else ''}" if problems else "all good"
    if warnings:
        verdict += f", {warnings} warning{'s' if warnings > 1 else ''}"
    lines.append(verdict)
    return "\n".join(lines) + "\n"
