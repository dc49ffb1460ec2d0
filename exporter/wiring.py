"""Settings -> the driver, stats source, poller, remediation, deployer, mount policy and app.

The one place, with the entry point that hands it settings, that names the
concrete driver. ``__main__``, the tests and the benches all wire through
it; what a test changes (a fake driver, a clock it moves by hand, polls it
drives itself) is a parameter of :func:`wire`, not a copy of it.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from exporter.alertpull import AlertmanagerClient, AlertPuller
from exporter.api import create_app
from exporter.config import DiscoveryMode, Settings, StatsSourceKind, flag_name
from exporter.confinement import MountPolicy
from exporter.drivers.base import ContainerEvents, Driver
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.errors import ConfigError
from exporter.fsusage import LayerSizer
from exporter.metrics import build_registry
from exporter.poller import Poller
from exporter.processes import CgroupProcessCounter
from exporter.remediation import RemediationPolicy, Remediator
from exporter.replica_deploy import START_SETTLE_SECONDS, ReplicaDeployer
from exporter.replicas import AppReplicaInstanceList
from exporter.sources.base import DriverStatsSource, FallbackStatsSource, StatsSource
from exporter.sources.cgroup import CgroupStatsSource, cgroup_files_readable
from exporter.sources.host import read_host_stats
from exporter.state import StateStore
from exporter.webconfig import WebConfigWatcher

log = logging.getLogger("exporter")


def build_driver(settings: Settings) -> DockerDriver:
    """Return the Docker driver for DOCKER_HOST, with the poll's deadlines."""
    try:
        endpoint = DockerEndpoint.from_env()
    except (ValueError, OSError) as e:
        raise ConfigError(str(e)) from e
    return DockerDriver(
        endpoint,
        stats_timeout=settings.poll_timeout,
        max_connections=settings.poll_concurrency,
        max_pulls=settings.api_max_concurrent_pulls,
        vpc_pool=settings.api_vpc_subnet_pool,
        vpc_max_networks=settings.api_vpc_max_networks,
    )


def counts_processes(settings: Settings) -> bool:
    """Return whether the settings ask for process, thread and fd counts."""
    return settings.collect_processes and "processes" not in settings.collect_disable


def build_stats_source(settings: Settings, driver: Driver) -> StatsSource:
    """Return the stats source the settings ask for, and log it; ConfigError as below."""
    source, why = choose_stats_source(settings, driver)
    log.info("stats source: %s (%s)", source.name, why)
    return source


def choose_stats_source(settings: Settings, driver: Driver) -> tuple[StatsSource, str]:
    """Return the stats source the settings ask for and why; ConfigError if a forced one cannot.

    ``auto`` reads the kernel's cgroup files when they are readable and asks
    the engine for each container they cannot answer; otherwise the engine.
    """
    engine = DriverStatsSource(driver, settings.poll_concurrency)
    kind = settings.stats_source
    readable = kind is not StatsSourceKind.DOCKER and cgroup_files_readable(
        settings.proc_root, settings.cgroup_root
    )
    source: StatsSource
    if kind is StatsSourceKind.DOCKER:
        source, why = engine, f"{flag_name('stats_source')}=docker"
    elif kind is StatsSourceKind.CGROUP:
        if not readable:
            raise ConfigError(
                f"{flag_name('stats_source')}=cgroup, but {settings.proc_root}/self/cgroup "
                f"or {settings.cgroup_root} is not readable"
            )
        source = CgroupStatsSource(
            settings.proc_root,
            settings.cgroup_root,
            disabled_groups=settings.collect_disable,
            count_processes=counts_processes(settings),
        )
        why = f"{flag_name('stats_source')}=cgroup"
    elif readable:
        source = FallbackStatsSource(
            CgroupStatsSource(
                settings.proc_root,
                settings.cgroup_root,
                fallback="the engine",
                disabled_groups=settings.collect_disable,
                count_processes=counts_processes(settings),
            ),
            engine,
        )
        why = f"cgroup files readable under {settings.cgroup_root}; the engine for the rest"
    else:
        source = engine
        why = f"{settings.proc_root}/self/cgroup or {settings.cgroup_root} not readable"
    return source, why


def build_poller(settings: Settings, driver: Driver) -> Poller:
    """Return a poller wired to ``driver`` as the settings say."""
    return Poller(
        driver,
        build_stats_source(settings, driver),
        naming=settings.naming(),
        interval=settings.poll_interval,
        call_timeout=settings.poll_timeout,
        concurrency=settings.poll_concurrency,
        include_unmanaged=settings.collect_all,
        process_counter=(
            CgroupProcessCounter(str(settings.proc_root), str(settings.cgroup_root))
            if counts_processes(settings)
            else None
        ),
        host_reader=functools.partial(read_host_stats, settings.proc_root),
        layer_sizer=(
            None
            if "fs" in settings.collect_disable
            else LayerSizer(budget=settings.collect_fs_budget)
        ),
        layer_interval=settings.collect_fs_interval,
        events=(
            driver
            if settings.discovery_mode is DiscoveryMode.EVENTS
            and isinstance(driver, ContainerEvents)
            else None
        ),
        resync_interval=settings.discovery_resync_interval,
    )


def read_api_token(settings: Settings) -> str | None:
    """Return the API token: the token file's content (stripped), else EXPORTER_API_TOKEN."""
    path = settings.api_token_file
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{flag_name('api_token_file')}: cannot read {path}: {e}") from e
        if not token:
            raise ConfigError(f"{flag_name('api_token_file')}: {path} is empty")
        return token
    if settings.api_token is not None:
        return settings.api_token.get_secret_value().strip() or None
    return None


def build_remediation(
    settings: Settings, driver: Driver, clock: Callable[[], float] = time.time
) -> Remediator:
    """Return remediation over ``driver`` with its state under the state dir."""
    state_dir = settings.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{flag_name('state_dir')}: cannot create {state_dir}: {e}") from e
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag_name('state_dir')}: {state_dir} is not writable")
    return Remediator(
        driver,
        StateStore(state_dir),
        settings.naming(),
        RemediationPolicy.from_settings(settings),
        clock=clock,
    )


def build_alert_puller(settings: Settings, poller: Poller, remediation: Remediator) -> AlertPuller:
    """Return pull mode's poller of the Alertmanager peers the settings name."""

    def names_here() -> set[str] | None:
        # The latest poll's containers: no engine call per alert, none when it failed.
        snapshot = poller.snapshot
        if not snapshot.engine_up:
            return None
        return {sample.info.name for sample in snapshot.containers}

    puller = AlertPuller(
        AlertmanagerClient(
            settings.alertmanager_url, timeout=min(5.0, settings.alertmanager_poll_interval)
        ),
        remediation,
        interval=settings.alertmanager_poll_interval,
        instance=settings.remediation_instance,
        names_here=names_here,
    )
    # A restart an exporter kill cut before its stop is redone only for an alert still active.
    remediation.recheck = puller.still_active
    return puller


def build_deployer(
    settings: Settings,
    driver: Driver,
    mount_policy: MountPolicy,
    *,
    arch: str | None = None,
    start_settle_seconds: float = START_SETTLE_SECONDS,
) -> ReplicaDeployer:
    """Return the replica deployer laying pods out under the pod base dir."""
    return ReplicaDeployer(
        driver,
        AppReplicaInstanceList(settings.naming()),
        pod_base=settings.pod_base_dir,
        host_prefix=settings.host_prefix,
        arch=arch,
        start_settle_seconds=start_settle_seconds,
        mount_policy=mount_policy,
    )


def build_mount_policy(settings: Settings, driver: Driver) -> MountPolicy:
    """Return the one mount policy of API creates and replica deploys (one lock over both).

    The settings' protected paths (the state file, the token file, the usual
    engine sockets) and the socket this driver talks to are never mounted.
    """
    socket = driver.endpoint.socket_path if isinstance(driver, DockerDriver) else None
    return MountPolicy.from_settings(settings, [socket] if socket else [])


@dataclass(frozen=True)
class Wired:
    """What :func:`wire` built: the app, and the parts behind it for tests and benches."""

    app: web.Application
    driver: Driver
    poller: Poller
    registry: CollectorRegistry
    mount_policy: MountPolicy
    #: The API's bearer token, read once (None: the API is off); never in a repr.
    api_token: str | None = field(repr=False)
    #: None when neither the API nor pull mode is on: no state dir is needed, none is touched.
    remediation: Remediator | None = None
    deployer: ReplicaDeployer | None = None
    #: Pull mode's poller of Alertmanager; None unless --alertmanager.url is set.
    alert_puller: AlertPuller | None = None


def wire(
    settings: Settings,
    *,
    driver: Driver | None = None,
    clock: Callable[[], float] = time.time,
    poll_in_background: bool = True,
    arch: str | None = None,
    start_settle_seconds: float = START_SETTLE_SECONDS,
    web_config: WebConfigWatcher | None = None,
) -> Wired:
    """Return the exporter ``serve`` runs, wired from ``settings``; ConfigError names the flag.

    ``driver`` defaults to the Docker driver of DOCKER_HOST; ``clock`` is
    remediation's; without ``poll_in_background`` the caller drives polls
    itself. ``arch`` (default: this host's) and ``start_settle_seconds`` are
    the deployer's; ``web_config`` (``--web.config.file``) the app's. The app
    closes the driver when it shuts down.
    """
    driver = driver if driver is not None else build_driver(settings)
    poller = build_poller(settings, driver)
    token = read_api_token(settings)
    pull = bool(settings.alertmanager_url)
    # Without a token the API is off: no state dir is needed, none is touched, unless
    # pull mode remediates (it needs no token: Alertmanager is asked, not posted from).
    remediation = build_remediation(settings, driver, clock) if token or pull else None
    policy = build_mount_policy(settings, driver)
    deployer = (
        build_deployer(
            settings, driver, policy, arch=arch, start_settle_seconds=start_settle_seconds
        )
        if token
        else None
    )
    puller = (
        build_alert_puller(settings, poller, remediation)
        if pull and remediation is not None
        else None
    )
    registry = build_registry(poller, remediation=remediation, alertpull=puller)
    app = create_app(
        settings=settings,
        driver=driver,
        poller=poller,
        registry=registry,
        api_token=token,
        mount_policy=policy,
        poll_in_background=poll_in_background,
        deployer=deployer,
        remediation=remediation,
        web_config=web_config,
        alert_puller=puller,
    )
    return Wired(app, driver, poller, registry, policy, token, remediation, deployer, puller)
