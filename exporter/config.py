"""Settings: environment variables ``EXPORTER_*``, Prometheus-style flags, defaults.

Flags win over the environment, which wins over defaults. Each flag is the
field's name with the first ``_`` made a ``.`` and the rest ``-``
(``web_listen_address`` -> ``--web.listen-address``), and each variable is
``EXPORTER_`` + the upper-cased field name. The engine is found as the
docker CLI finds it: ``DOCKER_HOST`` and friends, not an ``EXPORTER_`` name.
"""

from __future__ import annotations

import ipaddress
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from exporter.naming import DEFAULT_PATTERN, DEFAULT_TEMPLATE, NamingScheme, sanitize_label_name
from exporter.vpc import parse_pool

#: Outside 9100-9999 (the exporters' range) and used by no well-known exporter.
DEFAULT_PORT = 8733


class LogFormat(StrEnum):
    """How log lines are written."""

    PLAIN = "plain"
    JSON = "json"


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
        env_prefix="EXPORTER_", extra="forbid", case_sensitive=False, frozen=True
    )

    web_listen_address: str = Field(
        default=f"0.0.0.0:{DEFAULT_PORT}", description="address to serve HTTP on"
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
    log_level: str = Field(default="info", description="debug, info, warning or error")
    log_format: LogFormat = Field(default=LogFormat.PLAIN, description="plain or json")

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

    @field_validator("web_listen_address")
    @classmethod
    def _listen_address(cls, v: str) -> str:
        split_listen_address(v)
        return v

    @field_validator("web_telemetry_path")
    @classmethod
    def _telemetry_path(cls, v: str) -> str:
        if not v.startswith("/") or v in ("/healthz", "/readyz") or v.startswith("/api/"):
            raise ValueError(f"{v!r} must start with / and not shadow another route")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        level = v.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"{v!r} is not one of debug, info, warning, error")
        return level

    @field_validator(
        "collect_labels",
        "api_mount_prefixes",
        "api_image_allowlist",
        "api_vpc_subnet_pool",
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

    @field_validator("api_vpc_subnet_pool")
    @classmethod
    def _vpc_pool(cls, v: list[str]) -> list[str]:
        return [str(net) for net in parse_pool(v)]

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
        """Return the (host, port) to serve on."""
        return split_listen_address(self.web_listen_address)

    def mount_prefixes(self) -> list[Path]:
        """Return the host dirs the API lets bind mounts come from (default: the pod base)."""
        return list(self.api_mount_prefixes) or [self.pod_base_dir]


def flag_name(field: str) -> str:
    """Return the Prometheus-style flag of a settings field (``--web.listen-address``)."""
    head, _, rest = field.partition("_")
    return f"--{head}.{rest.replace('_', '-')}" if rest else f"--{head}"


def env_name(field: str) -> str:
    """Return the environment variable of a settings field."""
    return f"EXPORTER_{field.upper()}"


def shown_default(field: str) -> str:
    """Return a settings field's default as a person would type it ("" for none)."""
    default = Settings.model_fields[field].get_default(call_default_factory=True)
    if isinstance(default, list):
        return ",".join(str(item) for item in default)
    if default is None:
        return ""
    return str(getattr(default, "value", default))
