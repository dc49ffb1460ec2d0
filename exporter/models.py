"""The driver contract's data types as pydantic models.

Field names are the Go JSON tags where the seed gives them and snake_case of
the Go field name where it does not. Models that come *in* (create options,
replicas) validate what the engine would reject, and every message names the
field; models that come *out* of the driver trust the driver.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

#: The engine refuses memory limits below 6 MiB.
MIN_MEMORY_LIMIT_BYTES = 6 * 1024 * 1024

# Docker's own rule for container names (daemon/names.go: RestrictedNamePattern).
_DOCKER_NAME = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+")
# RFC 1123 host name, as the engine checks it.
_HOSTNAME = re.compile(r"(?!-)[a-zA-Z0-9-]{1,63}(?<!-)(\.(?!-)[a-zA-Z0-9-]{1,63}(?<!-))*")
_ENV_KEY = re.compile(r"[^=\0]+")

#: The engine keeps sizes and counts in Go's int64: a larger number is its
#: JSON decoding error (a 400 or 500 naming no field), so it is refused here.
INT64_MAX = 2**63 - 1
#: NanoCpus is int64 too, and a millicore is a million of them.
MAX_CPU_LIMIT_MILLICORES = INT64_MAX // 1_000_000
#: The largest uid/gid chown takes: 2**32 - 1 is (uid_t)-1, "leave unchanged".
MAX_ID = 2**32 - 2

RestartPolicy = Literal["no", "always", "on-failure", "unless-stopped"]
Protocol = Literal["tcp", "udp", "sctp"]
Port = Annotated[int, Field(ge=1, le=65535)]


def _image_reference(v: str) -> str:
    if any(c.isspace() for c in v) or "\0" in v:
        raise ValueError("must not contain whitespace or NUL")
    return v


def _env_entry(v: str) -> str:
    if "\0" in v:
        raise ValueError("must not contain NUL")
    if not _ENV_KEY.fullmatch(v.split("=", 1)[0]):
        raise ValueError(f"{v!r} is not KEY=VALUE")
    return v


#: One ``KEY=VALUE`` environment entry, checked on its own so that an error
#: names its index (``env.2``), not the whole list.
EnvEntry = Annotated[str, AfterValidator(_env_entry)]

#: An image reference as a user gives it: whatever the engine parses, but never
#: whitespace or NUL, which no reference holds and which would reach its URL.
ImageReference = Annotated[str, AfterValidator(_image_reference)]


class ContainerState(StrEnum):
    """The driver's view of a container's state, mapped from the engine's."""

    RUNNING = "running"
    STOPPED = "stopped"
    STARTING = "starting"
    #: Created and never started: not on its way up, unlike ``starting`` (restarting).
    CREATED = "created"


#: The engine's own states (``State.Status``), in the order metrics list them.
ENGINE_STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")
# What a driver state stands for when a driver gives no engine state.
_ENGINE_STATE_OF = {
    ContainerState.RUNNING: "running",
    ContainerState.STOPPED: "exited",
    ContainerState.STARTING: "created",
}


class _Input(BaseModel):
    """Base of models that come from users: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class _Output(BaseModel):
    """Base of models the driver produces: immutable snapshots."""

    model_config = ConfigDict(frozen=True)


class PortBinding(_Input):
    """A container port published on the host."""

    host_ip: str = Field(default="", description="host address; empty means 0.0.0.0")
    host_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=0, description="host port; 0 lets the engine choose"
    )
    container_port: Port = Field(description="port inside the container")
    protocol: Protocol = "tcp"

    @field_validator("host_ip")
    @classmethod
    def _host_ip_is_an_address(cls, v: str) -> str:
        if v:
            try:
                ipaddress.ip_address(v)
            except ValueError as e:
                raise ValueError(f"not an IP address: {v!r}") from e
        return v


class MountBind(_Input):
    """A host directory bind-mounted into the container."""

    host_path: str = Field(description="absolute path on the host")
    container_path: str = Field(description="absolute path inside the container, not /")
    read_only: bool = False
    uid: Annotated[int, Field(ge=0, le=MAX_ID)] = Field(
        default=0, description="owner to chown host_path to; 0 means no change"
    )
    gid: Annotated[int, Field(ge=0, le=MAX_ID)] = Field(
        default=0, description="group to chown host_path to; 0 means no change"
    )

    @field_validator("host_path", "container_path")
    @classmethod
    def _absolute_clean_path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must be an absolute path, got {v!r}")
        if "\0" in v or ":" in v or "," in v:
            # ':' and ',' are separators in the engine's bind syntax.
            raise ValueError("must not contain NUL, ':' or ','")
        return v

    @field_validator("container_path")
    @classmethod
    def _not_the_root(cls, v: str) -> str:
        # normpath keeps a leading "//" (POSIX leaves it implementation-defined);
        # the engine cleans it to "/".
        if not posixpath.normpath(v).strip("/"):
            raise ValueError("cannot be '/'")
        return v


class ContainerCreateOptions(_Input):
    """Parameters for creating a container."""

    name: str = Field(description="container name")
    image: ImageReference = Field(min_length=1, description="image reference")
    cmd: list[str] = Field(default_factory=list, description="entrypoint command")
    env: list[EnvEntry] = Field(default_factory=list, description="KEY=VALUE environment")
    labels: dict[str, str] = Field(default_factory=dict, description="metadata labels")
    hostname: str = ""
    cpu_limit: Annotated[int, Field(ge=0, le=MAX_CPU_LIMIT_MILLICORES)] = Field(
        default=0, description="CPU limit in millicores (1000 = one core); 0 is none"
    )
    memory_limit: Annotated[int, Field(ge=0, le=INT64_MAX)] = Field(
        default=0, description="memory limit in bytes, swap disabled; 0 is none"
    )
    ports: list[PortBinding] = Field(default_factory=list)
    mounts: list[MountBind] = Field(default_factory=list)
    restart_policy: RestartPolicy = "no"
    dns_servers: list[str] = Field(default_factory=list)
    vpc_ipv4: str = Field(default="", description="address to give the container in vpc_subnet")
    vpc_subnet: str = Field(default="", description="subnet CIDR of the container's network")

    @field_validator("name")
    @classmethod
    def _docker_name(cls, v: str) -> str:
        if not _DOCKER_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)")
        return v.lstrip("/")

    @field_validator("cmd")
    @classmethod
    def _no_nul(cls, v: list[str]) -> list[str]:
        if any("\0" in item for item in v):
            raise ValueError("must not contain NUL")
        return v

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, v: dict[str, str]) -> dict[str, str]:
        if any(not k or "\0" in k or "\0" in val for k, val in v.items()):
            raise ValueError("keys must be non-empty; no NUL in keys or values")
        return v

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if v and (len(v) > 253 or not _HOSTNAME.fullmatch(v)):
            raise ValueError(f"{v!r} is not a valid host name")
        return v

    @field_validator("memory_limit")
    @classmethod
    def _memory_minimum(cls, v: int) -> int:
        if 0 < v < MIN_MEMORY_LIMIT_BYTES:
            raise ValueError(f"must be 0 or at least {MIN_MEMORY_LIMIT_BYTES} bytes (6 MiB)")
        return v

    @field_validator("dns_servers")
    @classmethod
    def _dns_addresses(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_address(item)
            except ValueError as e:
                raise ValueError(f"{item!r} is not an IP address") from e
        return v

    @field_validator("vpc_subnet")
    @classmethod
    def _subnet(cls, v: str) -> str:
        if v:
            try:
                ipaddress.IPv4Network(v, strict=True)
            except ValueError as e:
                raise ValueError(f"{v!r} is not an IPv4 network in CIDR form: {e}") from e
        return v

    @field_validator("vpc_ipv4")
    @classmethod
    def _ipv4(cls, v: str) -> str:
        if v:
            try:
                ipaddress.IPv4Address(v)
            except ValueError as e:
                raise ValueError(f"{v!r} is not an IPv4 address") from e
        return v

    @model_validator(mode="after")
    def _vpc_address_inside_subnet(self) -> ContainerCreateOptions:
        if self.vpc_ipv4 and not self.vpc_subnet:
            raise ValueError("vpc_ipv4: needs vpc_subnet")
        if self.vpc_ipv4:
            net = ipaddress.IPv4Network(self.vpc_subnet)
            addr = ipaddress.IPv4Address(self.vpc_ipv4)
            if addr not in net or addr in (net.network_address, net.broadcast_address):
                raise ValueError(f"vpc_ipv4: {addr} is not a host address of {net}")
        seen: set[tuple[int, str]] = set()
        for p in self.ports:
            key = (p.container_port, p.protocol)
            if key in seen:
                raise ValueError(f"ports: container port {p.container_port}/{p.protocol} twice")
            seen.add(key)
        return self


# A validated, slotted pydantic dataclass rather than a model: the poller
# caches one per container, and a model's own dict and fields-set doubled each
# (2.3 KiB against 1.2 KiB, most of it the strings). ``TypeAdapter`` and model
# fields serialize it like a model. Its docstring is the API schema's text.
@pydantic_dataclass(frozen=True, slots=True, kw_only=True)
class ContainerInfo:
    """A container as the engine's inspect answer describes it."""

    # A validated, slotted pydantic dataclass rather than a model: the poller
    # caches one per container, and a model's own dict and fields-set doubled
    # each (2.3 KiB against 1.2 KiB, most of it the strings). TypeAdapter and
    # model fields serialize it like a model. (A comment, not the docstring:
    # the docstring is the OpenAPI schema's description.)

    id: str
    name: str
    image: str = ""
    image_id: str = ""
    state: ContainerState
    status: str = Field(default="", description="the engine's detailed status")
    pid: int = Field(default=0, description="host pid of the container's init; 0 if not running")
    ip: str = ""
    ports: dict[int, PortBinding] = Field(
        default_factory=dict, description="keyed by container port"
    )
    created: int = Field(default=0, description="unix seconds")
    started: int = Field(default=0, description="unix seconds; 0 if never started")
    labels: dict[str, str] = Field(default_factory=dict)
    cpu_limit: int = Field(default=0, description="millicores; 0 is none")
    memory_limit: int = Field(default=0, description="bytes; 0 is none")
    binds: list[str] = Field(
        default_factory=list, description="bind mounts as source:destination[:ro]"
    )
    # Every mount's host source (binds and volumes), from the list answer too:
    # the mount policy checks new sources against all of them. A tuple: the
    # empty one costs nothing per cached container.
    mount_sources: tuple[str, ...] = Field(default=(), exclude=True)
    last_inspect_time: int = Field(default=0, exclude=True, description="unix seconds")
    # What the metrics need of inspect beyond the contract's fields. Kept out
    # of the API's answers (exclude), which stay the contract's.
    engine_state: str = Field(
        default="",
        exclude=True,
        description="the engine's own state (paused, restarting, ...); state folds it",
    )
    health: str = Field(
        default="", exclude=True, description="healthcheck status; empty without a healthcheck"
    )
    restart_count: int = Field(default=0, exclude=True)
    exit_code: int = Field(default=0, exclude=True, description="the last exit's code")
    oom_killed: bool = Field(
        default=False, exclude=True, description="the last exit was an OOM kill"
    )
    memory_reservation: int = Field(default=0, exclude=True, description="bytes; 0 is none")
    memory_swap_limit: int = Field(
        default=0, exclude=True, description="memory plus swap, bytes; 0 unset, -1 unlimited"
    )
    cpu_shares: int = Field(default=0, exclude=True, description="relative weight; 0 is default")
    layer_dir: str = Field(
        default="",
        exclude=True,
        description="host path of the writable layer (overlay2's UpperDir); empty if none",
    )
    cgroup_path: str = Field(
        default="",
        exclude=True,
        description="the container's cgroup as the kernel names it (/docker/<id>, "
        "/system.slice/docker-<id>.scope); empty when the driver cannot say",
    )


def engine_state_of(info: ContainerInfo) -> str:
    """Return the engine's state of ``info``: its own, or what its driver state stands for."""
    return info.engine_state or _ENGINE_STATE_OF[info.state]


@dataclass(frozen=True, slots=True)
class ContainerStats:
    """One sample of a container's resource usage; byte and op counts are cumulative.

    The first ten fields are the seed's. The ``cpu_user_usage``,
    ``cpu_system_usage`` and ``memory_inactive_file`` fields extend it so the
    working set and the user/system split can be exported too; the optional
    fields after them fill cAdvisor's other families.

    A slotted dataclass rather than a pydantic model: the poller holds one
    per container, two generations during a poll, and a model's per-instance
    dict and fields-set cost three times the numbers themselves (1.7 KiB
    against 0.55 KiB). Drivers build it from numbers they have already parsed;
    ``pydantic.TypeAdapter(ContainerStats)`` serializes it where JSON is needed.
    """

    time: float  # when the sample was taken, unix seconds
    cpu_total_usage: int = 0  # CPU time, nanoseconds
    memory_usage: int = 0  # bytes, page cache included
    memory_cache: int = 0  # page cache bytes (v2: file)
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0
    blk_read_bytes: int = 0
    blk_write_bytes: int = 0
    blk_read_ops: int = 0
    blk_write_ops: int = 0
    cpu_user_usage: int = 0  # user CPU time, nanoseconds
    cpu_system_usage: int = 0  # system CPU time, nanoseconds
    memory_inactive_file: int = 0  # bytes, reclaimable first
    # cAdvisor's further families. None where the source cannot know the
    # figure (a cgroup v2 file the kernel lacks, a field the engine's answer
    # does not carry): the series is then absent, never a made-up 0.
    memory_rss: int | None = None  # bytes of anonymous memory (v1 total_rss, v2 anon)
    memory_swap: int | None = None  # bytes swapped out (v1 total_swap, v2 memory.swap.current)
    memory_mapped_file: int | None = None  # bytes (v1 total_mapped_file, v2 file_mapped)
    memory_failcnt: int | None = None  # times usage hit the limit (v1 memory.failcnt)
    memory_max_usage: int | None = None  # bytes, peak usage (v1 max_usage_in_bytes, v2 peak)
    cpu_periods: int | None = None  # CFS enforcement periods elapsed
    cpu_throttled_periods: int | None = None  # periods the cgroup was throttled in
    cpu_throttled_time: int | None = None  # nanoseconds throttled
    net_rx_packets: int | None = None  # None: no network of its own (host networking)
    net_tx_packets: int | None = None
    net_rx_errors: int | None = None
    net_tx_errors: int | None = None
    net_rx_dropped: int | None = None
    net_tx_dropped: int | None = None
    oom_events: int | None = None  # processes the OOM killer killed in the cgroup

    @property
    def memory_working_set(self) -> int:
        """Return usage minus inactive file pages, as ``docker stats`` shows it."""
        return max(self.memory_usage - self.memory_inactive_file, 0)


class ImageInfo(_Output):
    """An image the engine holds."""

    name: str
    id: str
    repo_tags: list[str] = Field(default_factory=list)
    repo_digests: list[str] = Field(default_factory=list)
    size: int = Field(default=0, description="bytes")
    created: int = Field(default=0, description="unix seconds")
    labels: dict[str, str] = Field(default_factory=dict)


class DriverInfo(_Output):
    """What the driver and its engine are."""

    name: str
    version: str
    api_version: str = ""
    os: str = ""
    arch: str = ""
    kernel: str = ""
    container_num: int = 0
    image_num: int = 0


class AppSpec(_Input):
    """What a replica's container runs: the part of an app spec the host acts on."""

    image: str = Field(min_length=1)
    env: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    cpu_limit: Annotated[int, Field(ge=0, le=MAX_CPU_LIMIT_MILLICORES)] = Field(
        default=0, description="millicores"
    )
    memory_limit: Annotated[int, Field(ge=0, le=INT64_MAX)] = Field(default=0, description="bytes")
    ports: list[PortBinding] = Field(default_factory=list)
    restart_policy: RestartPolicy = "no"


class AppDeploy(_Input):
    """An app's deployment: its revision grows with every change."""

    revision: Annotated[int, Field(ge=0, le=INT64_MAX)]


class AppInstance(_Input):
    """An app instance: its id, its deployment and its spec."""

    id: str
    deploy: AppDeploy
    spec: AppSpec


class AppDeployReplica(_Input):
    """One replica of a deployment."""

    rep_id: Annotated[int, Field(ge=0, le=0xFFFF)]


class AppReplicaInstance(_Input):
    """An app instance plus one replica id: what one container runs."""

    app: AppInstance
    replica: AppDeployReplica

    @property
    def deploy_revision(self) -> int:
        """Return the deployment revision this replica belongs to."""
        return self.app.deploy.revision
