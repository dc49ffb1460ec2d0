"""Entry point: flags and environment -> settings -> the concrete driver -> the app.

This is the only module that knows which driver is concrete.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from exporter import __version__, logs
from exporter.api import create_app, server
from exporter.check import render, run_checks
from exporter.config import (
    DiscoveryMode,
    Settings,
    StatsSourceKind,
    env_name,
    flag_name,
    shown_default,
)
from exporter.confinement import MountPolicy
from exporter.drivers.docker import DockerDriver, DockerEndpoint
from exporter.errors import ConfigError
from exporter.exposition import Exposition
from exporter.metrics import build_registry
from exporter.poller import Poller
from exporter.processes import CgroupProcessCounter
from exporter.remediation import RemediationPolicy, Remediator
from exporter.replica_deploy import ReplicaDeployer
from exporter.replicas import AppReplicaInstanceList
from exporter.sources.base import DriverStatsSource, FallbackStatsSource, StatsSource
from exporter.sources.cgroup import (
    CgroupStatsSource,
    cgroup_files_readable,
    raise_open_files_limit,
)
from exporter.state import StateStore

log = logging.getLogger("exporter")

#: Seconds aiohttp keeps an idle connection open. It is also the headers'
#: deadline: a connection whose request headers are not complete this long
#: after it opened (or after its last answer) is closed, however slowly they
#: trickle in. Said here, not left to aiohttp's default: it bounds a slowloris.
#: Longer than a minute so that Prometheus's 1 m scrapes reuse the connection.
KEEPALIVE_TIMEOUT = 75.0

COMMANDS = {
    "serve": "serve /metrics, /healthz, /readyz (and the API when a token is set)",
    "once": "poll the engine once, print the exposition and exit",
    "check": "say whether the engine answers, which stats source would be used, whether "
    "the listen port is free and which settings are set; exit 0 when all is well, else 1",
}


def _settings_flags() -> argparse.ArgumentParser:
    """Return a parent parser with one flag per settings field."""
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("settings (each also read from its EXPORTER_* variable)")
    for field, info in Settings.model_fields.items():
        kwargs: dict[str, Any] = {
            "dest": field,
            # SUPPRESS: an absent flag must not override the environment.
            "default": argparse.SUPPRESS,
            "help": f"{info.description or ''} [{env_name(field)}; "
            f"default: {shown_default(field) or 'none'}]",
        }
        if info.annotation is bool:
            # --collect.all / --no-collect.all: a flag that took an optional
            # value would swallow the command after it ("--collect.all once").
            kwargs["action"] = argparse.BooleanOptionalAction
        group.add_argument(flag_name(field), **kwargs)
    return flags


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser: settings flags, then a command (flags may follow it)."""
    flags = _settings_flags()
    parser = argparse.ArgumentParser(
        prog="sysinner-exporter",
        description="Prometheus exporter and remediation sidecar for sysinner-style app hosts. "
        "The engine is found through DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, "
        "as the docker CLI finds it.",
        parents=[flags],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        commands.add_parser(name, help=help_text, description=help_text, parents=[flags])
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    """Return settings from flags over the environment; ConfigError names the flag."""
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    try:
        settings = Settings(**given)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            where = (
                f"{flag_name(field)} / {env_name(field)}"
                if field in Settings.model_fields
                else field
            )
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from e
    if settings.api_token_file is not None and not settings.api_token_file.is_file():
        raise ConfigError(
            f"{flag_name('api_token_file')}: {settings.api_token_file} is not a readable file"
        )
    return settings


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


def build_stats_source(settings: Settings, driver: DockerDriver) -> StatsSource:
    """Return the stats source the settings ask for; ConfigError if a forced one cannot read.

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
        source = CgroupStatsSource(settings.proc_root, settings.cgroup_root)
        why = f"{flag_name('stats_source')}=cgroup"
    elif readable:
        source = FallbackStatsSource(
            CgroupStatsSource(settings.proc_root, settings.cgroup_root), engine
        )
        why = f"cgroup files readable under {settings.cgroup_root}; the engine for the rest"
    else:
        source = engine
        why = f"{settings.proc_root}/self/cgroup or {settings.cgroup_root} not readable"
    log.info("stats source: %s (%s)", source.name, why)
    return source


def build_poller(settings: Settings, driver: DockerDriver) -> Poller:
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
            if settings.collect_processes
            else None
        ),
        events=driver if settings.discovery_mode is DiscoveryMode.EVENTS else None,
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


def build_remediation(settings: Settings, driver: DockerDriver) -> Remediator:
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
    )


def build_deployer(
    settings: Settings, driver: DockerDriver, mount_policy: MountPolicy
) -> ReplicaDeployer:
    """Return the replica deployer laying pods out under the pod base dir."""
    return ReplicaDeployer(
        driver,
        AppReplicaInstanceList(settings.naming()),
        pod_base=settings.pod_base_dir,
        host_prefix=settings.host_prefix,
        mount_policy=mount_policy,
    )


async def _once(settings: Settings) -> int:
    driver = build_driver(settings)
    poller: Poller | None = None
    try:
        poller = build_poller(settings, driver)
        snapshot = await poller.poll_once()
        exposition = Exposition(poller, build_registry(poller), settings.collect_labels)
        sys.stdout.buffer.write(b"".join(exposition.body().chunks))
        if not snapshot.engine_up:
            log.error("engine unreachable: %s", snapshot.error)
            return 1
        return 0
    finally:
        if poller is not None:
            await poller.aclose()
        await driver.close()


async def _check(settings: Settings) -> int:
    driver = build_driver(settings)
    try:
        findings = await run_checks(
            settings,
            driver,
            driver.endpoint.host,
            functools.partial(build_stats_source, settings, driver),
        )
    finally:
        await driver.close()
    sys.stdout.write(render(findings))
    return 0 if all(f.ok for f in findings) else 1


def _serve(settings: Settings) -> int:
    driver = build_driver(settings)
    poller = build_poller(settings, driver)
    token = read_api_token(settings)
    # Without a token the API is off: no state dir is needed, none is touched.
    remediation = build_remediation(settings, driver) if token else None
    protected = [driver.endpoint.socket_path] if driver.endpoint.socket_path else []
    # One policy for API creates and replica deploys: one lock over both.
    policy = MountPolicy.from_settings(settings, protected)
    deployer = build_deployer(settings, driver, policy) if token else None
    registry = build_registry(poller, remediation=remediation)
    app = create_app(
        settings=settings,
        driver=driver,
        poller=poller,
        registry=registry,
        api_token=token,
        deployer=deployer,
        remediation=remediation,
        protected_paths=protected,
        mount_policy=policy,
    )
    host, port = settings.listen()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log.info(
        "serving on %s:%d; scrape http://%s:%d%s (engine %s, poll every %gs)",
        host,
        port,
        shown,
        port,
        settings.web_telemetry_path,
        driver.endpoint.host,
        settings.poll_interval,
    )
    log.info(
        "lifecycle API %s",
        f"on (state in {settings.state_dir}, pods in {settings.pod_base_dir})"
        if token
        else f"off: set {flag_name('api_token_file')} or {env_name('api_token')} to turn it on",
    )
    asyncio.run(
        server.serve(
            app,
            host,
            port,
            max_connections=settings.web_max_connections,
            access_log=logging.getLogger("aiohttp.access"),
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "serve"
    try:
        settings = load_settings(args)
    except ConfigError as e:
        print(f"sysinner-exporter: {e}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format.value)
    # Before anything is opened: the held cgroup files are sized from the raised limit.
    soft, hard = raise_open_files_limit()
    log.debug("open files limit: %d (hard %d)", soft, hard)
    try:
        if command == "once":
            return asyncio.run(_once(settings))
        if command == "check":
            return asyncio.run(_check(settings))
        return _serve(settings)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    except OSError as e:
        log.error("cannot serve: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
