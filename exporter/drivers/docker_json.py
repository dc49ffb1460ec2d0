"""Pure translations between the Docker Engine API's JSON and the contract's models.

Kept apart from the transport so each can be tested on recorded engine
answers, for the cgroup v1 and v2 stats layouts alike.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from exporter.drivers.base import ContainerEvent
from exporter.models import (
    ContainerCreateOptions,
    ContainerInfo,
    ContainerState,
    ContainerStats,
    ImageInfo,
    PortBinding,
)

JSON = dict[str, Any]

# The engine's states, mapped as the Go driver maps them.
_STATES = {
    "running": ContainerState.RUNNING,
    "paused": ContainerState.RUNNING,
    "restarting": ContainerState.STARTING,
    "created": ContainerState.CREATED,
    "exited": ContainerState.STOPPED,
    "dead": ContainerState.STOPPED,
    "removing": ContainerState.STOPPED,
}
_FRACTION = re.compile(r"\.(\d+)")


_DECODER = json.JSONDecoder()


def _skip_blank(text: str, at: int) -> int:
    while text[at : at + 1] in (" ", "\t", "\n", "\r"):
        at += 1
    return at


def iter_json_array(text: str) -> Iterator[JSON]:
    """Yield the items of a JSON array one at a time; ValueError if ``text`` is not one.

    A caller that translates each item as it comes never holds the whole
    array parsed: at thousands of containers a list answer parsed at once is
    about 10 MiB of dicts, which the models built from it then replace.
    """
    at = _skip_blank(text, 0)
    if text[at : at + 1] != "[":
        raise ValueError("expected a JSON array")
    at = _skip_blank(text, at + 1)
    if text[at : at + 1] != "]":
        while True:
            item, at = _DECODER.raw_decode(text, at)  # also refuses a trailing comma
            yield item
            at = _skip_blank(text, at)
            if text[at : at + 1] == "]":
                break
            if text[at : at + 1] != ",":
                raise ValueError(f"expected ',' or ']' at offset {at}")
            at = _skip_blank(text, at + 1)
    if _skip_blank(text, at + 1) != len(text):
        raise ValueError(f"extra data after the array at offset {at + 1}")


def map_state(engine_state: str) -> ContainerState:
    """Return the driver state of an engine state (unknown ones count as stopped)."""
    return _STATES.get(engine_state.lower(), ContainerState.STOPPED)


def parse_timestamp(value: str | None) -> float:
    """Return unix seconds of an RFC 3339 engine timestamp; 0 for Go's zero time."""
    if not value or value.startswith("0001-01-01"):
        return 0.0
    # The engine writes nanoseconds; datetime takes at most microseconds.
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value, count=1)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _name(raw: JSON) -> str:
    names = raw.get("Names") or [raw.get("Name") or ""]
    return str(names[0]).lstrip("/")


def _list_ports(raw_ports: list[JSON] | None) -> dict[int, PortBinding]:
    ports: dict[int, PortBinding] = {}
    for p in raw_ports or []:
        if not p.get("PublicPort"):
            continue  # exposed but not published: nothing reachable from the host
        ports.setdefault(
            int(p["PrivatePort"]),
            PortBinding(
                host_ip=p.get("IP", ""),
                host_port=int(p["PublicPort"]),
                container_port=int(p["PrivatePort"]),
                protocol=p.get("Type", "tcp"),
            ),
        )
    return ports


def _inspect_ports(raw_ports: dict[str, list[JSON] | None] | None) -> dict[int, PortBinding]:
    ports: dict[int, PortBinding] = {}
    for key, bindings in (raw_ports or {}).items():
        port, _, proto = key.partition("/")
        for b in bindings or []:
            ports.setdefault(
                int(port),
                PortBinding(
                    host_ip=b.get("HostIp", ""),
                    host_port=int(b.get("HostPort") or 0),
                    container_port=int(port),
                    protocol=proto or "tcp",
                ),
            )
    return ports


def _shared(text: str) -> str:
    """Return one shared copy of a string many containers repeat (image, status, labels).

    Each JSON answer makes its own copies; a host of thousands of containers
    of a few images would hold thousands of each, in the list's models and in
    the poller's inspect cache.
    """
    return sys.intern(text)


def _labels(raw: JSON | None) -> dict[str, str]:
    return {_shared(k): _shared(v) for k, v in (raw or {}).items()}


def _first_ip(networks: dict[str, JSON] | None) -> str:
    for net in (networks or {}).values():
        if net.get("IPAddress"):
            return str(net["IPAddress"])
    return ""


def _mount_sources(mounts: list[JSON] | None) -> tuple[str, ...]:
    return tuple(_shared(m["Source"]) for m in mounts or () if m.get("Source"))


def _binds(raw: JSON) -> list[str]:
    """Return the bind mounts as ``source:destination[:ro]``, however they were created."""
    mounts = raw.get("Mounts")
    if mounts is None:
        return list((raw.get("HostConfig") or {}).get("Binds") or [])
    return [
        f"{m['Source']}:{m['Destination']}" + ("" if m.get("RW", True) else ":ro")
        for m in mounts
        if m.get("Type") == "bind"
    ]


def container_from_list(raw: JSON) -> ContainerInfo:
    """Return a ContainerInfo from one entry of ``GET /containers/json``."""
    return ContainerInfo(
        id=raw["Id"],
        name=_name(raw),
        image=_shared(raw.get("Image", "")),
        image_id=_shared(raw.get("ImageID", "")),
        state=map_state(raw.get("State", "")),
        engine_state=_shared(raw.get("State", "")),
        status=_shared(raw.get("Status", "")),
        ip=_first_ip((raw.get("NetworkSettings") or {}).get("Networks")),
        ports=_list_ports(raw.get("Ports")),
        created=int(raw.get("Created", 0)),
        labels=_labels(raw.get("Labels")),
        mount_sources=_mount_sources(raw.get("Mounts")),
    )


def cpu_millicores(host_config: JSON) -> int:
    """Return the CPU limit in millicores from NanoCpus, or from quota/period."""
    nano = int(host_config.get("NanoCpus") or 0)
    if nano:
        return nano // 1_000_000
    quota = int(host_config.get("CpuQuota") or 0)
    period = int(host_config.get("CpuPeriod") or 0) or 100_000
    return quota * 1000 // period if quota > 0 else 0


def _systemd_slice_path(slice_name: str) -> str:
    """Return the path systemd gives a slice: ``a-b.slice`` is ``/a.slice/a-b.slice``."""
    if slice_name in ("", "-.slice"):
        return ""
    stem = slice_name.removesuffix(".slice")
    parts = stem.split("-")
    return "".join("/" + "-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def cgroup_path(container_id: str, cgroup_parent: str, cgroup_driver: str) -> str:
    """Return the cgroup the engine puts a container in, as the kernel (and cAdvisor) names it.

    cgroupfs: ``<parent or /docker>/<id>``; systemd: the parent slice's path
    (``system.slice`` by default) then ``docker-<id>.scope``. Both cgroup
    versions name it the same way.
    """
    if cgroup_driver == "systemd":
        parent = cgroup_parent or "system.slice"
        if parent.endswith(".slice"):
            return f"{_systemd_slice_path(parent)}/docker-{container_id}.scope"
        # A parent that is not a slice is taken as a plain path by the engine.
        return f"/{parent.strip('/')}/docker-{container_id}.scope"
    parent = "/" + (cgroup_parent or "/docker").strip("/")
    return f"{parent.rstrip('/')}/{container_id}"


def container_from_inspect(
    raw: JSON, now: float | None = None, *, cgroup_driver: str = "cgroupfs"
) -> ContainerInfo:
    """Return a ContainerInfo from ``GET /containers/{id}/json``.

    ``cgroup_driver`` is the engine's (``GET /info`` ``CgroupDriver``): it
    says where the container's cgroup is.
    """
    state = raw.get("State") or {}
    config = raw.get("Config") or {}
    host = raw.get("HostConfig") or {}
    net = raw.get("NetworkSettings") or {}
    engine_state = state.get("Status", "")
    return ContainerInfo(
        id=raw["Id"],
        name=_name(raw),
        image=_shared(config.get("Image", "")),
        image_id=_shared(raw.get("Image", "")),
        state=map_state(engine_state),
        status=_shared(engine_state),
        pid=int(state.get("Pid") or 0),
        ip=net.get("IPAddress") or _first_ip(net.get("Networks")),
        ports=_inspect_ports(net.get("Ports")),
        created=int(parse_timestamp(raw.get("Created"))),
        started=int(parse_timestamp(state.get("StartedAt"))),
        labels=_labels(config.get("Labels")),
        cpu_limit=cpu_millicores(host),
        memory_limit=int(host.get("Memory") or 0),
        binds=_binds(raw),
        mount_sources=_mount_sources(raw.get("Mounts")),
        last_inspect_time=int(time.time() if now is None else now),
        engine_state=_shared(engine_state),
        health=_shared((state.get("Health") or {}).get("Status") or ""),
        restart_count=int(raw.get("RestartCount") or 0),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        memory_reservation=int(host.get("MemoryReservation") or 0),
        memory_swap_limit=int(host.get("MemorySwap") or 0),
        cpu_shares=int(host.get("CpuShares") or 0),
        cgroup_path=cgroup_path(raw["Id"], host.get("CgroupParent") or "", cgroup_driver),
        layer_dir=str(((raw.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir") or ""),
    )


def image_from_list(raw: JSON) -> ImageInfo:
    """Return an ImageInfo from one entry of ``GET /images/json``."""
    tags = [t for t in raw.get("RepoTags") or [] if t != "<none>:<none>"]
    digests = [d for d in raw.get("RepoDigests") or [] if d != "<none>@<none>"]
    return ImageInfo(
        name=tags[0] if tags else (digests[0].split("@")[0] if digests else raw["Id"]),
        id=raw["Id"],
        repo_tags=tags,
        repo_digests=digests,
        size=int(raw.get("Size") or 0),
        created=int(raw.get("Created") or 0),
        labels=raw.get("Labels") or {},
    )


def _blkio_sum(entries: list[JSON] | None, op: str) -> int:
    # cgroup v1 writes "Read", v2 "read"; both list one entry per device.
    return sum(int(e.get("value") or 0) for e in entries or [] if str(e.get("op")).lower() == op)


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _network_counter(networks: list[JSON], key: str) -> int | None:
    # No networks (host networking): no counters, as the cgroup source has none.
    return sum(int(n.get(key) or 0) for n in networks) if networks else None


def stats_from_engine(raw: JSON, now: float | None = None) -> ContainerStats:
    """Return ContainerStats from one ``GET /containers/{id}/stats`` answer (v1 or v2).

    Fields the answer does not carry stay None (their series are absent):
    swap and OOM kills always, ``failcnt`` and ``max_usage`` on cgroup v2.
    """
    cpu_stats = raw.get("cpu_stats") or {}
    cpu = cpu_stats.get("cpu_usage") or {}
    throttling = cpu_stats.get("throttling_data") or {}
    mem = raw.get("memory_stats") or {}
    mem_stats = mem.get("stats") or {}
    blkio = raw.get("blkio_stats") or {}
    networks = list((raw.get("networks") or {}).values())
    taken = parse_timestamp(raw.get("read")) or (time.time() if now is None else now)
    # v1 names page cache "cache" and the hierarchical inactive file
    # "total_inactive_file"; v2 has "file" and "inactive_file".
    cache = mem_stats.get("cache", mem_stats.get("file", 0))
    inactive = mem_stats.get("total_inactive_file", mem_stats.get("inactive_file", 0))
    v1 = "total_rss" in mem_stats
    return ContainerStats(
        time=taken,
        cpu_total_usage=int(cpu.get("total_usage") or 0),
        cpu_user_usage=int(cpu.get("usage_in_usermode") or 0),
        cpu_system_usage=int(cpu.get("usage_in_kernelmode") or 0),
        memory_usage=int(mem.get("usage") or 0),
        memory_cache=int(cache or 0),
        memory_inactive_file=int(inactive or 0),
        net_rx_bytes=sum(int(n.get("rx_bytes") or 0) for n in networks),
        net_tx_bytes=sum(int(n.get("tx_bytes") or 0) for n in networks),
        blk_read_bytes=_blkio_sum(blkio.get("io_service_bytes_recursive"), "read"),
        blk_write_bytes=_blkio_sum(blkio.get("io_service_bytes_recursive"), "write"),
        blk_read_ops=_blkio_sum(blkio.get("io_serviced_recursive"), "read"),
        blk_write_ops=_blkio_sum(blkio.get("io_serviced_recursive"), "write"),
        # The hierarchical v1 figures, as cAdvisor reads them; v2's own names.
        memory_rss=_int_or_none(mem_stats.get("total_rss", mem_stats.get("anon"))),
        memory_mapped_file=_int_or_none(
            mem_stats.get("total_mapped_file", mem_stats.get("file_mapped"))
        ),
        # The engine omits both when 0 (omitempty), and v2 has neither.
        memory_failcnt=int(mem.get("failcnt") or 0) if v1 else None,
        memory_max_usage=int(mem.get("max_usage") or 0) if v1 else None,
        cpu_periods=_int_or_none(throttling.get("periods")),
        cpu_throttled_periods=_int_or_none(throttling.get("throttled_periods")),
        cpu_throttled_time=_int_or_none(throttling.get("throttled_time")),
        net_rx_packets=_network_counter(networks, "rx_packets"),
        net_tx_packets=_network_counter(networks, "tx_packets"),
        net_rx_errors=_network_counter(networks, "rx_errors"),
        net_tx_errors=_network_counter(networks, "tx_errors"),
        net_rx_dropped=_network_counter(networks, "rx_dropped"),
        net_tx_dropped=_network_counter(networks, "tx_dropped"),
    )


def create_body(opts: ContainerCreateOptions, network: str | None = None) -> JSON:
    """Return the ``POST /containers/create`` body for ``opts``.

    ``network`` names the user-defined network to attach to at
    ``opts.vpc_ipv4`` (see ``DockerDriver`` for how it is found or made).
    """
    host: JSON = {
        # Mounts, not Binds: the engine refuses a missing bind source at create
        # and at every start, where Binds would make it, as root, following
        # any symlink on the way.
        "Mounts": [
            {
                "Type": "bind",
                "Source": m.host_path,
                "Target": m.container_path,
                "ReadOnly": m.read_only,
            }
            for m in opts.mounts
        ],
        "RestartPolicy": {"Name": opts.restart_policy},
        "PortBindings": {
            f"{p.container_port}/{p.protocol}": [
                {"HostIp": p.host_ip, "HostPort": str(p.host_port) if p.host_port else ""}
            ]
            for p in opts.ports
        },
        "Dns": list(opts.dns_servers),
    }
    if opts.cpu_limit:
        host["NanoCpus"] = opts.cpu_limit * 1_000_000
    if opts.memory_limit:
        # MemorySwap equal to Memory means no swap at all.
        host["Memory"] = opts.memory_limit
        host["MemorySwap"] = opts.memory_limit
    body: JSON = {
        "Image": opts.image,
        "Env": list(opts.env),
        "Labels": dict(opts.labels),
        "ExposedPorts": {f"{p.container_port}/{p.protocol}": {} for p in opts.ports},
        "HostConfig": host,
    }
    if opts.cmd:
        body["Entrypoint"] = list(opts.cmd)
        body["Cmd"] = []
    if opts.hostname:
        body["Hostname"] = opts.hostname
    if network is not None:
        host["NetworkMode"] = network
        endpoint: JSON = {}
        if opts.vpc_ipv4:
            endpoint["IPAMConfig"] = {"IPv4Address": opts.vpc_ipv4}
        body["NetworkingConfig"] = {"EndpointsConfig": {network: endpoint}}
    return body


def split_image_reference(image: str) -> tuple[str, str]:
    """Return (repository, tag or digest) of an image reference; the tag defaults to latest."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:  # a colon before the last slash is a registry port
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def vpc_network_name(subnet: str) -> str:
    """Return the name the driver gives the network it makes for ``subnet``."""
    return "sysinner-vpc-" + subnet.replace("/", "-")


def event_from_engine(raw: JSON) -> ContainerEvent:
    """Return a ContainerEvent from one line of ``GET /events``."""
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    # "health_status: healthy" and "exec_start: sh -c ..." carry a detail after the colon.
    action = str(raw.get("Action") or raw.get("status") or "").partition(":")[0].strip()
    return ContainerEvent(
        action=action,
        id=str(actor.get("ID") or raw["id"]),
        attributes={str(k): str(v) for k, v in attributes.items()},
        time_nano=int(raw.get("timeNano") or 0),
    )
