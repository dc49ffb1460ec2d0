"""Entry point: flags and environment -> settings -> the wiring (``exporter.wiring``) -> run.

Nothing imports this module but the command line's own tests: what builds the
driver, poller and app lives in ``exporter.wiring``, for the tests and benches
to use as this does.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client.registry import CollectorRegistry
from pydantic import ValidationError

from exporter import __version__, logs
from exporter.api import server
from exporter.check import render, run_checks
from exporter.config import (
    Settings,
    deprecated_variables,
    env_name,
    flag_name,
    shown_default,
)
from exporter.errors import ConfigError
from exporter.exposition import Exposition
from exporter.listeners import ListenError, bind_all, shown
from exporter.metrics import HttpServerCollector, build_registry, enabled_rows
from exporter.poller import Poller
from exporter.sources.cgroup import raise_open_files_limit
from exporter.webconfig import WebConfigError, WebConfigWatcher
from exporter.wiring import build_driver, build_poller, choose_stats_source, read_api_token, wire

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
    group = flags.add_argument_group(
        "settings (each also read from its SYSINNER_EXPORTER_* variable)"
    )
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
        elif field == "web_listen_address":
            # Repeatable, as the exporter-toolkit's: one listener per address.
            kwargs["action"] = "append"
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


async def _once(settings: Settings) -> int:
    driver = build_driver(settings)
    poller: Poller | None = None
    try:
        poller = build_poller(settings, driver)
        snapshot = await poller.poll_once()
        if not snapshot.engine_up:
            # An exposition of a poll that reached no engine would read as "no
            # containers here": print nothing, say why, exit 1.
            log.error("engine unreachable, nothing printed: %s", snapshot.error)
            return 1
        exposition = Exposition(
            poller,
            build_registry(poller),
            settings.collect_labels,
            with_id=settings.collect_id_label,
            table=enabled_rows(settings.collect_disable),
            series_labels=settings.collect_series_labels,
        )
        sys.stdout.buffer.write(b"".join(exposition.body().chunks))
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
            functools.partial(choose_stats_source, settings, driver),
            web_config_check=functools.partial(load_web_config, settings),
            read_token=functools.partial(read_api_token, settings),
        )
    finally:
        await driver.close()
    sys.stdout.write(render(findings))
    return 0 if all(f.ok for f in findings) else 1


def load_web_config(settings: Settings) -> WebConfigWatcher | None:
    """Return the watcher of ``--web.config.file`` (None without one); ConfigError names it."""
    if settings.web_config_file is None:
        return None
    try:
        return WebConfigWatcher(settings.web_config_file)
    except WebConfigError as e:
        raise ConfigError(f"{flag_name('web_config_file')}: {e}") from e


def _serve(settings: Settings) -> int:
    # Bind first: a port in use is one line and exit 1 before anything is built or logged.
    sockets = bind_all(settings.listen_addresses())
    try:
        web_config = load_web_config(settings)
        driver = build_driver(settings)
        wired = wire(settings, driver=driver, web_config=web_config)
        app, token = wired.app, wired.api_token
        log.info(
            "engine %s, poll every %gs; lifecycle API %s",
            driver.endpoint.host,
            settings.poll_interval,
            f"on (state in {settings.state_dir}, pods in {settings.pod_base_dir})"
            if token
            else f"off: set {flag_name('api_token_file')} or {env_name('api_token')} to turn it on",
        )
        if wired.alert_puller is not None:
            log.info(
                "pull mode: alerts from %s every %gs (%s)",
                ", ".join(settings.alertmanager_url),
                settings.alertmanager_poll_interval,
                f"instance={settings.remediation_instance}"
                if settings.remediation_instance
                else "alerts naming this host's containers",
            )
        return asyncio.run(_run_server(app, wired.registry, sockets, settings, web_config))
    finally:
        for sock in sockets:
            sock.close()


async def _run_server(
    app: web.Application,
    registry: CollectorRegistry,
    sockets: list[socket.socket],
    settings: Settings,
    web_config: WebConfigWatcher | None,
) -> int:
    """Serve ``app`` on the bound ``sockets`` until SIGTERM or SIGINT; SIGHUP reloads."""
    runner = server.GuardedAppRunner(
        app,
        max_connections=settings.web_max_connections,
        handle_signals=False,
        access_log=logging.getLogger("aiohttp.access"),
        keepalive_timeout=KEEPALIVE_TIMEOUT,
    )
    await runner.setup()
    if isinstance(runner.server, server.GuardedServer):
        registry.register(HttpServerCollector(runner.server))
    ssl_context = web_config.ssl_context() if web_config is not None else None
    scheme = "https" if ssl_context is not None else "http"
    try:
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        if web_config is not None:
            log.info("web config %s: %s", web_config.path, web_config.current().describe())
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            reachable = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            log.info(
                "serving on %s; scrape %s://%s%s",
                shown(host, port),
                scheme,
                shown(reachable, port),
                settings.web_telemetry_path,
            )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        received: list[str] = []

        def on_stop(sig: signal.Signals) -> None:
            received.append(sig.name)
            stop.set()

        def on_hup() -> None:
            if web_config is None:
                log.info("SIGHUP: no %s to reload", flag_name("web_config_file"))
            else:
                web_config.reload()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await stop.wait()
        log.info("%s received: stopping", received[0])
    finally:
        await runner.cleanup()
    log.info("stopped")
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
    for old, new in deprecated_variables():
        log.warning("%s is deprecated: it is still read, but rename it %s", old, new)
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
    except ListenError as e:
        log.error("%s", e)
        return 1
    except OSError as e:
        log.error("cannot serve: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
