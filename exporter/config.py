"""Settings: environment variables ``SYSINNER_EXPORTER_*``, Prometheus-style flags, defaults.

Flags win over the environment, which wins over defaults. Each flag is the
field's name with the first ``_`` made a ``.`` and the rest ``-``
(``web_listen_address`` -> ``--web.listen-address``), and each variable is
``SYSINNER_EXPORTER_`` + the upper-cased field name. The old ``EXPORTER_``
names (a prefix other exporters' images use too) are still read, below the
new ones, and deprecated: :func:`deprecated_variables` names them for the log.
The engine is found as the docker CLI finds it: ``DOCKER_HOST`` and friends.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from exporter.naming import DEFAULT_PATTERN, DEFAULT_TEMPLATE, NamingScheme, sanitize_label_name
from exporter.snapshot import COLLECT_GROUPS
from exporter.vpc import parse_pool

#: The prefix of every setting's environment variable.
ENV_PREFIX = "SYSINNER_EXPORTER_"
#: The old prefix, still read (below ENV_PREFIX) and deprecated.
LEGACY_ENV_PREFIX = "EXPORTER_"

#: Outside 9100-9999 (the exporters' range) and used by no well-known exporter.
DEFAULT_PORT = 8733


class LogFormat(StrEnum):
    """How log lines are written: logfmt (``plain`` is its old name) or JSON."""

    LOGFMT = "logfmt"
    JSON = "json"


#: Log level names a person may type, as the exporter-toolkit's promslog takes them.
LOG_LEVELS = {
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
}


class DiscoveryMode(StrEnum):
    """How the exporter learns which containers exist."""

    EVENTS = "events"
    POLL = "poll"


class StatsSourceKind(StrEnum):
    """Where per-container stats come from."""

    AUTO = "auto"
    CGROUP = "cgroup"
    DOCKER = "docker"


def split_listen_address(value: str) -> tuple[str, int]:
    """Return (host, port) of ``host:port``, ``[v6]:port`` or ``:port``; ValueError otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{host!r} is not an IP address") from None
    return host, port


class Settings(BaseSettings):
    """Every setting of sysinner-exporter, validated at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", case_sensitive=False, frozen=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read flags, then SYSINNER_EXPORTER_*, then the deprecated EXPORTER_*."""
        legacy = EnvSettingsSource(settings_cls, env_prefix=LEGACY_ENV_PREFIX)
        return init_settings, env_settings, legacy, dotenv_settings, file_secret_settings

    # NoDecode: several addresses are the flag repeated, or "a,b" in the environment.
    web_listen_address: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [f"0.0.0.0:{DEFAULT_PORT}"],
        description="address to serve HTTP on; repeat the flag (or comma-separate) for several",
    )
    web_config_file: Path | None = Field(
        default=None,
        description="exporter-toolkit web config (YAML): TLS and basic auth for every route, "
        "re-read when it changes or on SIGHUP",
    )
    web_telemetry_path: str = Field(default="/metrics", description="path of the metrics")
    web_read_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=10.0,
        description="how long a request body may take to arrive in full once its headers "
        "have, seconds (408 and the connection closed after)",
    )
    web_write_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="how long a /metrics answer may take to be read by the client, seconds "
        "(the connection is closed after)",
    )
    web_max_connections: Annotated[int, Field(ge=8, le=65536)] = Field(
        default=256,
        description="open HTTP connections at most; one more is closed at once, so idle or "
        "slow clients cannot use up the process's file descriptors",
    )
    log_level: str = Field(default="info", description="debug, info, warn (warning) or error")
    log_format: LogFormat = Field(
        default=LogFormat.LOGFMT, description="logfmt (plain is an alias) or json"
    )

    poll_interval: Annotated[float, Field(ge=0.2, le=3600)] = Field(
        default=10.0, description="seconds between polls of the engine"
    )
    poll_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=5.0, description="deadline of one engine call during a poll, seconds"
    )
    poll_concurrency: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=256,
        description="engine calls in flight during a poll; the engine answers stats "
        "once per ~1 s tick, so this should cover every running container",
    )
    collect_all: bool = Field(
        default=False, description="export unmanaged containers too (without app/replica)"
    )
    collect_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Docker label keys to copy onto container_info (allow-list)",
    )
    collect_id_label: bool = Field(
        default=True,
        description="put the 64-character container id on every container series; off: only "
        "on sysinner_container_info (names are unique in a sysinner fleet)",
    )
    collect_series_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Docker label keys to copy onto every container series as "
        "container_label_<key> (* for all, as cAdvisor does); each adds a label to every "
        "series, and a label whose value changes starts new series",
    )
    collect_disable: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="metric groups to leave out (cAdvisor's --disable_metrics): "
        + ", ".join(COLLECT_GROUPS),
    )
    collect_fs_interval: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=60.0,
        description="seconds between two sizings of the containers' writable layers "
        "(container_fs_*: a directory walk, far dearer than a poll)",
    )
    collect_fs_budget: Annotated[float, Field(gt=0, le=600)] = Field(
        default=2.0,
        description="most seconds one sizing round may walk; the layers it did not "
        "reach are sized first in the next round",
    )
    collect_processes: bool = Field(
        default=True,
        description="count processes, threads and fds per container (cgroup.procs and /proc)",
    )

    discovery_mode: DiscoveryMode = Field(
        default=DiscoveryMode.EVENTS,
        description="events: follow the engine's event stream and list only at start, "
        "on reconnect and every resync interval; poll: list and inspect at every poll "
        "(for engines without a usable event stream)",
    )
    discovery_resync_interval: Annotated[float, Field(ge=1, le=86400)] = Field(
        default=300.0,
        description="seconds between full lists while following events, so a missed event heals",
    )

    stats_source: StatsSourceKind = Field(
        default=StatsSourceKind.AUTO,
        description="auto: cgroup files when readable, else the engine; or force one",
    )
    proc_root: Path = Field(default=Path("/proc"), description="the host's /proc")
    cgroup_root: Path = Field(default=Path("/sys/fs/cgroup"), description="the host's cgroups")

    naming_pattern: str = Field(
        default=DEFAULT_PATTERN,
        description="regex of managed names, with groups app and replica",
    )
    naming_template: str = Field(default=DEFAULT_TEMPLATE, description="format of managed names")
    naming_replica_base: Annotated[int, Field(ge=10, le=16)] = Field(
        default=16, description="base of the replica group: 16 or 10"
    )

    api_token: SecretStr | None = Field(
        default=None, description="bearer token that turns the lifecycle API on"
    )
    api_token_file: Path | None = Field(
        default=None, description="file holding the bearer token (wins over api_token)"
    )
    api_max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024, description="largest request body the API accepts, bytes (413 above)"
    )
    api_pull_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=120.0, description="how long POST /api/v1/images/pull waits for a pull, seconds"
    )
    # NoDecode: a list from the environment is "a,b" (or JSON), split by _split_list.
    api_mount_prefixes: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="host dirs bind mounts may come from (comma-separated); empty: pod_base_dir",
    )
    api_image_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="fnmatch patterns of images the API may create or pull (comma-separated); "
        "empty allows any",
    )
    api_max_concurrent_pulls: Annotated[int, Field(ge=1, le=64)] = Field(
        default=2,
        description="image pulls in flight at once (429 beyond); pulls have their own "
        "connections to the engine, apart from polls and API reads",
    )
    api_vpc_subnet_pool: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="IPv4 CIDRs a vpc_subnet must lie in (comma-separated); empty: vpc "
        "networks are refused. No entry may overlap loopback, link-local, multicast or "
        "0.0.0.0/8; each subnet is also checked against the host's routes when asked for",
    )
    api_vpc_max_networks: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=16,
        description="vpc networks the exporter keeps at once; one unused by any container is "
        "removed when its last container is removed through the exporter or a new one is needed",
    )
    pod_base_dir: Path = Field(
        default=Path("/var/lib/sysinner-exporter/pods"),
        description="host dir holding one pod dir per replica created through the API",
    )
    host_prefix: Path = Field(
        default=Path("/opt/sysinner/innerstack"),
        description="host installation the ininit script and inagent binary are copied from",
    )
    state_dir: Path = Field(
        default=Path("/var/lib/sysinner-exporter"),
        description="dir of the SQLite state that keeps remediation decisions across restarts",
    )
    remediation_action_label: str = Field(
        default="action", min_length=1, description="alert label that asks for remediation"
    )
    remediation_action_value: str = Field(
        default="restart", min_length=1, description="value of that label that asks for a restart"
    )
    remediation_cooldown_seconds: Annotated[float, Field(ge=0, le=86400)] = Field(
        default=300.0, description="least time between two restarts of one container, seconds"
    )
    remediation_budget: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, description="restarts per container per window before it is quarantined"
    )
    remediation_window_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = Field(
        default=3600.0, description="the window the restart budget counts over, seconds"
    )
    remediation_concurrency: Annotated[int, Field(ge=1, le=256)] = Field(
        default=4, description="restarts in flight at once, over all containers"
    )
    remediation_dry_run: bool = Field(
        default=False, description="decide and record, but never restart anything"
    )
    remediation_instance: str | None = Field(
        default=None,
        min_length=1,
        description="pull mode: act only on alerts whose instance label is this; unset: on "
        "alerts naming a container of this host",
    )
    # Pull mode (exporter.alertpull): the exporter asks Alertmanager instead of being posted to.
    alertmanager_url: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="base URLs of the peers of one Alertmanager cluster (comma-separated); "
        "set: pull the alerts to act on from its API v2",
    )
    alertmanager_poll_interval: Annotated[float, Field(ge=0.2, le=3600)] = Field(
        default=10.0,
        description="seconds between polls of Alertmanager (each wait jittered to 0.8-1x of it)",
    )

    @field_validator("web_listen_address", mode="before")
    @classmethod
    def _listen_addresses(cls, v: object) -> object:
        # One address (a variable, the model) or several (flags repeated, "a,b").
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            v = [a.strip() for item in v for a in str(item).split(",") if a.strip()]
            if not v:
                raise ValueError("at least one address is needed")
            for address in v:
                split_listen_address(address)
        return v

    @field_validator("log_format", mode="before")
    @classmethod
    def _plain_is_logfmt(cls, v: object) -> object:
        return LogFormat.LOGFMT if isinstance(v, str) and v.lower() == "plain" else v

    @field_validator("web_telemetry_path")
    @classmethod
    def _telemetry_path(cls, v: str) -> str:
        if not v.startswith("/") or v in ("/healthz", "/readyz") or v.startswith("/api/"):
            raise ValueError(f"{v!r} must start with / and not shadow another route")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        level = LOG_LEVELS.get(v.lower())
        if level is None:
            raise ValueError(f"{v!r} is not one of debug, info, warn, error")
        return level

    @field_validator(
        "collect_labels",
        "collect_series_labels",
        "collect_disable",
        "api_mount_prefixes",
        "api_image_allowlist",
        "api_vpc_subnet_pool",
        "alertmanager_url",
        mode="before",
    )
    @classmethod
    def _split_list(cls, v: object) -> object:
        # A flag or variable gives "a,b" or a JSON list; the model gives a list.
        if isinstance(v, str):
            if v.lstrip().startswith("["):
                return json.loads(v)
            return [item.strip() for item in v.split(",") if item.strip()]
        return v

    @field_validator("collect_labels")
    @classmethod
    def _distinct_label_names(cls, v: list[str]) -> list[str]:
        # Two keys that become one label name would give container_info a
        # duplicate label, and Prometheus refuses the whole scrape.
        # A key given twice is one label (kept once).
        first_key: dict[str, str] = {}
        for key in v:
            name = sanitize_label_name(key)
            other = first_key.setdefault(name, key)
            if other != key:
                raise ValueError(
                    f"label keys {other!r} and {key!r} both become the label name {name!r}; "
                    "keep one of them"
                )
        return list(first_key.values())

    @field_validator("collect_disable")
    @classmethod
    def _known_groups(cls, v: list[str]) -> list[str]:
        unknown = [g for g in v if g not in COLLECT_GROUPS]
        if unknown:
            raise ValueError(
                f"unknown group {', '.join(map(repr, unknown))}; the groups are "
                + ", ".join(COLLECT_GROUPS)
            )
        return list(dict.fromkeys(v))

    @field_validator("api_vpc_subnet_pool")
    @classmethod
    def _vpc_pool(cls, v: list[str]) -> list[str]:
        return [str(net) for net in parse_pool(v)]

    @field_validator("alertmanager_url")
    @classmethod
    def _peer_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            scheme, sep, rest = url.partition("://")
            if not sep or scheme not in ("http", "https") or not rest.strip("/"):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return [url.rstrip("/") for url in v]

    @field_validator("api_mount_prefixes")
    @classmethod
    def _absolute_prefixes(cls, v: list[Path]) -> list[Path]:
        for p in v:
            if not p.is_absolute():
                raise ValueError(f"{str(p)!r} is not an absolute path")
        return v

    @model_validator(mode="after")
    def _naming_compiles(self) -> Settings:
        try:
            self.naming()
        except ValueError as e:
            raise ValueError(f"naming_pattern/naming_template: {e}") from e
        return self

    def naming(self) -> NamingScheme:
        """Return the naming scheme these settings describe."""
        return NamingScheme(self.naming_pattern, self.naming_template, self.naming_replica_base)

    def listen(self) -> tuple[str, int]:
        """Return the first (host, port) to serve on."""
        return split_listen_address(self.web_listen_address[0])

    def listen_addresses(self) -> list[tuple[str, int]]:
        """Return every (host, port) to serve on, in the order given."""
        return [split_listen_address(a) for a in self.web_listen_address]

    def mount_prefixes(self) -> list[Path]:
        """Return the host dirs the API lets bind mounts come from (default: the pod base)."""
        return list(self.api_mount_prefixes) or [self.pod_base_dir]


#: Flags spelled as the exporter-toolkit spells them, not by the rule.
_FLAG_EXCEPTIONS = {"web_config_file": "--web.config.file"}


def flag_name(field: str) -> str:
    """Return the Prometheus-style flag of a settings field (``--web.listen-address``)."""
    if field in _FLAG_EXCEPTIONS:
        return _FLAG_EXCEPTIONS[field]
    head, _, rest = field.partition("_")
    return f"--{head}.{rest.replace('_', '-')}" if rest else f"--{head}"


def env_name(field: str) -> str:
    """Return the environment variable of a settings field."""
    return f"{ENV_PREFIX}{field.upper()}"


def legacy_env_name(field: str) -> str:
    """Return the deprecated ``EXPORTER_*`` variable of a settings field."""
    return f"{LEGACY_ENV_PREFIX}{field.upper()}"


def deprecated_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Return (old, new) for each deprecated ``EXPORTER_*`` variable set in ``environ``."""
    names = {k.upper() for k in (os.environ if environ is None else environ)}
    return [
        (legacy_env_name(f), env_name(f))
        for f in Settings.model_fields
        if legacy_env_name(f) in names
    ]


def shown_default(field: str) -> str:
    """Return a settings field's default as a person would type it ("" for none)."""
    default = Settings.model_fields[field].get_default(call_default_factory=True)
    if isinstance(default, list):
        return ",".join(str(item) for item in default)
    if default is None:
        return ""
    return str(getattr(default, "value", default))
