"""The Docker driver: the one module that talks to the Docker Engine API.

It speaks the Engine API with aiohttp over the engine's socket (or TCP, with
TLS as the docker CLI configures it), so hundreds of concurrent stats calls
cost coroutines, not threads. Every failure leaves this module as a
:class:`~exporter.errors.DriverError`, chained from its cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack
from urllib.parse import quote, urlsplit

import aiohttp

import exporter.vpc as vpc
from exporter.drivers import docker_json as dj
from exporter.drivers.base import ContainerEvent
from exporter.errors import (
    BusyError,
    ConflictError,
    DriverError,
    DriverTimeoutError,
    EngineUnreachableError,
    NotFoundError,
)
from exporter.models import (
    ContainerCreateOptions,
    ContainerInfo,
    ContainerStats,
    DriverInfo,
    ImageInfo,
)

log = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
#: Where the host's IPv4 routes are read (the exporter runs in the host's network namespace).
HOST_ROUTES = Path("/proc/net/route")
#: Newest Engine API version this driver was written against.
MAX_API_VERSION = (1, 43)
#: one-shot stats appeared in API 1.41.
ONE_SHOT_API_VERSION = (1, 41)
#: An event line longer than this is not the engine's (its longest carry a container's labels).
MAX_EVENT_LINE = 256 * 1024
#: The Go driver waits this long for a stop before the engine kills.
STOP_GRACE_SECONDS = 10


@dataclass(frozen=True)
class DockerEndpoint:
    """Where the engine listens, resolved the way the docker CLI resolves it."""

    host: str
    base_url: str
    socket_path: str | None = None
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DockerEndpoint:
        """Return the endpoint named by DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH."""
        env = os.environ if env is None else env
        return cls.parse(
            env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST,
            tls_verify=bool(env.get("DOCKER_TLS_VERIFY")),
            cert_path=env.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker"),
        )

    @classmethod
    def parse(cls, host: str, *, tls_verify: bool = False, cert_path: str = "") -> DockerEndpoint:
        """Return the endpoint for a ``unix://`` or ``tcp://`` host; ValueError otherwise."""
        parts = urlsplit(host)
        if parts.scheme == "unix":
            # "unix:///abs.sock" has an empty netloc; "unix://rel/x.sock" starts in it.
            path = parts.netloc + parts.path
            if not path:
                raise ValueError(f"DOCKER_HOST: {host!r} names no socket path")
            return cls(host=host, base_url="http://docker", socket_path=path)
        if parts.scheme in ("tcp", "http", "https"):
            if not parts.hostname:
                raise ValueError(f"DOCKER_HOST: {host!r} names no host")
            port = parts.port or (2376 if tls_verify else 2375)
            ctx: ssl.SSLContext | None = None
            if tls_verify or parts.scheme == "https":
                try:
                    ctx = ssl.create_default_context(cafile=os.path.join(cert_path, "ca.pem"))
                    ctx.load_cert_chain(
                        os.path.join(cert_path, "cert.pem"), os.path.join(cert_path, "key.pem")
                    )
                except OSError as e:  # ssl names neither the file nor the directory
                    raise ValueError(
                        f"DOCKER_CERT_PATH: cannot load ca.pem, cert.pem, key.pem "
                        f"from {cert_path!r}: {e}"
                    ) from e
            scheme = "https" if ctx else "http"
            # An IPv6 literal needs its brackets back in a URL.
            hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            return cls(host=host, base_url=f"{scheme}://{hostname}:{port}", ssl_context=ctx)
        raise ValueError(f"DOCKER_HOST: unsupported scheme in {host!r} (unix:// or tcp://)")


def _version_tuple(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


class _Request(TypedDict, total=False):
    """What a call of the versioned API may say beside its method and path."""

    params: Mapping[str, str] | None
    body: Any
    deadline: float | None
    accept: tuple[int, ...]


class DockerDriver:
    """A :class:`~exporter.drivers.base.Driver` on the Docker Engine API."""

    def __init__(
        self,
        endpoint: DockerEndpoint | None = None,
        *,
        timeout: float = 30.0,
        stats_timeout: float = 5.0,
        pull_timeout: float = 300.0,
        stop_grace: int = STOP_GRACE_SECONDS,
        max_connections: int = 64,
        max_pulls: int = 2,
        vpc_pool: Sequence[str] = (),
        vpc_max_networks: int = 16,
        host_routes: Path = HOST_ROUTES,
    ) -> None:
        self.endpoint = endpoint or DockerEndpoint.from_env()
        self._timeout = timeout
        self._stats_timeout = stats_timeout
        self._pull_timeout = pull_timeout
        self._stop_grace = stop_grace
        self._max_connections = max_connections
        self._max_pulls = max_pulls
        self._pulls_in_flight = 0
        self._vpc_pool = vpc.parse_pool(vpc_pool)
        self._vpc_max_networks = vpc_max_networks
        self._host_routes = host_routes
        # Held from finding or making a vpc network until the container is
        # created on it, and by the sweep: the engine removes a network that
        # a created (not yet started) container names.
        self._vpc_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        # Pulls wait on registries for minutes: they get their own connections,
        # so that they can never hold the ones polls, pings and API reads need.
        self._pull_session: aiohttp.ClientSession | None = None
        self._prefix: str | None = None
        self._one_shot = True
        self._negotiate_lock = asyncio.Lock()
        self._cgroup_driver_name: str | None = None

    def name(self) -> str:
        """Return ``docker``."""
        return "docker"

    # -- transport -------------------------------------------------------

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        connector: aiohttp.BaseConnector
        if self.endpoint.socket_path is not None:
            connector = aiohttp.UnixConnector(path=self.endpoint.socket_path, limit=limit)
        else:
            connector = aiohttp.TCPConnector(ssl=self.endpoint.ssl_context or False, limit=limit)
        return aiohttp.ClientSession(base_url=self.endpoint.base_url, connector=connector)

    def _session_or_new(self, *, pull: bool = False) -> aiohttp.ClientSession:
        if pull:
            if self._pull_session is None or self._pull_session.closed:
                self._pull_session = self._new_session(self._max_pulls)
            return self._pull_session
        if self._session is None or self._session.closed:
            self._session = self._new_session(self._max_connections)
        return self._session

    async def _raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        deadline: float | None = None,
        pull: bool = False,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """Send one request; return (status, body, headers); raise only for transport failures."""
        deadline = self._timeout if deadline is None else deadline
        session = self._session_or_new(pull=pull)
        what = f"{method} {path}"
        with self._transport_errors(what, deadline):
            async with asyncio.timeout(deadline):
                async with session.request(
                    method,
                    path,
                    params=params,
                    data=None if body is None else json.dumps(body),
                    headers={"Content-Type": "application/json"} if body is not None else None,
                    # The engine redirects only to a cleaned path: never another endpoint.
                    allow_redirects=False,
                ) as resp:
                    return resp.status, await resp.read(), resp.headers

    @contextlib.contextmanager
    def _transport_errors(self, what: str, deadline: float) -> Iterator[None]:
        """Translate a transport failure of ``what`` into the driver's errors, for every call."""
        try:
            yield
        except TimeoutError as e:
            raise DriverTimeoutError(f"{what}: no answer within {deadline:g}s") from e
        except aiohttp.ClientConnectorError as e:
            raise EngineUnreachableError(
                f"cannot connect to Docker Engine via {self.endpoint.host}: {e.os_error}"
            ) from e
        except (aiohttp.ClientError, OSError) as e:
            raise EngineUnreachableError(
                f"lost the Docker Engine at {self.endpoint.host} during {what}: {e!r}"
            ) from e

    async def _api_prefix(self) -> str:
        """Return ``/vX.Y``: the engine's API version, capped at ours (asked once)."""
        if self._prefix is not None:
            return self._prefix
        async with self._negotiate_lock:
            if self._prefix is None:
                status, _, headers = await self._raw("GET", "/_ping")
                server = headers.get("Api-Version", "")
                if status >= 400 or not server:
                    raise DriverError(status, "engine did not report its API version")
                version = min(_version_tuple(server), MAX_API_VERSION)
                self._one_shot = version >= ONE_SHOT_API_VERSION
                self._prefix = f"/v{version[0]}.{version[1]}"
        return self._prefix

    async def _call(self, method: str, path: str, **request: Unpack[_Request]) -> Any:
        """Call the versioned API; return decoded JSON (or None); translate errors."""
        raw = await self._answer(method, path, **request)
        if not raw or raw[:1] not in (b"{", b"["):
            return None
        with _garbled(f"{method} {path}"):
            return json.loads(raw)

    async def _answer(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        deadline: float | None = None,
        accept: tuple[int, ...] = (200, 201, 204, 304),
    ) -> bytes:
        """Call the versioned API; return the body of an accepted answer; translate errors."""
        prefix = await self._api_prefix()
        status, raw, _ = await self._raw(
            method, prefix + path, params=params, body=body, deadline=deadline
        )
        if status in accept:
            return raw
        raise _error_for(status, raw, f"{method} {path}")

    # -- Driver ----------------------------------------------------------

    async def ping(self) -> None:
        """Return when the engine answers ``/_ping``."""
        status, raw, _ = await self._raw("GET", "/_ping", deadline=min(self._timeout, 5.0))
        if status != 200:
            raise _error_for(status, raw, "GET /_ping")

    async def info(self) -> DriverInfo:
        """Return the engine's version, platform and counts."""
        info, version = await asyncio.gather(
            self._call("GET", "/info"), self._call("GET", "/version")
        )
        return DriverInfo(
            name=self.name(),
            version=version.get("Version", ""),
            api_version=version.get("ApiVersion", ""),
            os=info.get("OperatingSystem", "") or version.get("Os", ""),
            arch=version.get("Arch", "") or info.get("Architecture", ""),
            kernel=info.get("KernelVersion", ""),
            container_num=int(info.get("Containers", 0)),
            image_num=int(info.get("Images", 0)),
        )

    async def container_list(self) -> list[ContainerInfo]:
        """Return every container, running or not, from one list call."""
        raw = await self._answer("GET", "/containers/json", params={"all": "1"})
        with _garbled("GET /containers/json"):
            text = raw.decode()
            del raw  # megabytes at thousands of containers, and the text has it all
            return [dj.container_from_list(entry) for entry in dj.iter_json_array(text)]

    async def container_inspect(self, name_or_id: str) -> ContainerInfo:
        """Return one container in full."""
        cgroup_driver = await self._cgroup_driver()
        raw = await self._call("GET", f"/containers/{_seg(name_or_id)}/json")
        with _garbled(f"GET /containers/{name_or_id}/json"):
            return dj.container_from_inspect(raw, cgroup_driver=cgroup_driver)

    async def _cgroup_driver(self) -> str:
        """Return the engine's cgroup driver (``cgroupfs``, ``systemd``), asked once."""
        if self._cgroup_driver_name is None:
            try:
                info = await self._call("GET", "/info")
            except (EngineUnreachableError, DriverTimeoutError):
                raise  # the inspect after it would fail too; ask again next time
            except DriverError:
                info = None  # an engine (or proxy) that refuses /info: the default layout
            found = info.get("CgroupDriver") if isinstance(info, dict) else None
            self._cgroup_driver_name = str(found or "cgroupfs")
        return self._cgroup_driver_name

    async def container_create(self, opts: ContainerCreateOptions) -> ContainerInfo:
        """Create a container as ``opts`` says (its network too) and inspect it.

        Mount sources must exist; ``uid``/``gid`` are the mount policy's to
        apply (on the fd of its walk, never on a path), not the driver's. A
        ``vpc_subnet`` must lie in the driver's subnet pool and, for a new
        network, miss the host's routes and the engine's networks:
        PolicyRefusedError (naming ``vpc_subnet``) otherwise.
        """
        if opts.vpc_subnet:
            # Refused before the engine is asked to change anything.
            vpc.check_in_pool(ipaddress.IPv4Network(opts.vpc_subnet), self._vpc_pool)
            async with self._vpc_lock:
                network = await self._vpc_network(opts.vpc_subnet)
                created = await self._call(
                    "POST",
                    "/containers/create",
                    params={"name": opts.name},
                    body=dj.create_body(opts, network),
                )
        else:
            created = await self._call(
                "POST",
                "/containers/create",
                params={"name": opts.name},
                body=dj.create_body(opts, None),
            )
        return await self.container_inspect(created["Id"])

    async def container_start(self, name_or_id: str) -> None:
        """Start a container (304, already running, is success)."""
        await self._call("POST", f"/containers/{_seg(name_or_id)}/start")

    async def container_stop(self, name_or_id: str) -> None:
        """Stop a container with the grace period; missing or stopped is success."""
        try:
            await self._call(
                "POST",
                f"/containers/{_seg(name_or_id)}/stop",
                params={"t": str(self._stop_grace)},
                # The engine answers only after the grace period and the kill.
                deadline=self._timeout + self._stop_grace,
            )
        except NotFoundError:
            return

    async def container_remove(self, name_or_id: str) -> None:
        """Force-remove a container and its anonymous volumes; missing is success.

        A vpc network the driver made that no container uses any more goes with it.
        """
        try:
            await self._call(
                "DELETE",
                f"/containers/{_seg(name_or_id)}",
                params={"force": "1", "v": "1"},
            )
        except NotFoundError:
            return
        except ConflictError as e:
            # Another caller's removal is already under way: the outcome is ours too.
            if "already in progress" not in e.message:
                raise
        try:
            await self.sweep_vpc_networks()
        except DriverError as e:
            # The container is gone, which is what was asked; the next sweep retries.
            log.warning("vpc network sweep after removing %s failed: %s", name_or_id, e)

    async def container_rename(self, name_or_id: str, new_name: str) -> None:
        """Rename a container; the engine answers 409 when ``new_name`` is taken."""
        await self._call(
            "POST", f"/containers/{_seg(name_or_id)}/rename", params={"name": new_name}
        )

    async def image_list(self) -> list[ImageInfo]:
        """Return the images the engine holds."""
        raw = await self._call("GET", "/images/json")
        return [dj.image_from_list(i) for i in raw]

    async def image_pull(self, image: str) -> None:
        """Pull ``image`` within the pull timeout; the engine's stream errors become DriverError.

        BusyError, at once, when ``max_pulls`` pulls are in flight already.
        """
        if self._pulls_in_flight >= self._max_pulls:
            raise BusyError(
                f"{self._pulls_in_flight} image pulls are in flight already (the most "
                f"allowed at once); try again when one is done"
            )
        self._pulls_in_flight += 1
        try:
            await self._pull(image)
        finally:
            self._pulls_in_flight -= 1

    async def _pull(self, image: str) -> None:
        repo, tag = dj.split_image_reference(image)
        prefix = await self._api_prefix()
        status, raw, _ = await self._raw(
            "POST",
            prefix + "/images/create",
            params={"fromImage": repo, "tag": tag},
            deadline=self._pull_timeout,
            pull=True,
        )
        if status != 200:
            raise _error_for(status, raw, f"pull {image}")
        # The engine answers 200 first and reports failures inside the stream.
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("error"):
                message = str(event["error"])
                cls = (
                    NotFoundError if "not found" in message or "unknown" in message else DriverError
                )
                raise cls(404 if cls is NotFoundError else 500, f"pull {image}: {message}")

    async def container_stats(self, name_or_id: str) -> ContainerStats:
        """Return one stats sample (one-shot when supported); ConflictError if not running."""
        await self._api_prefix()
        params = {"stream": "false"}
        if self._one_shot:
            params["one-shot"] = "true"
        raw = await self._call(
            "GET",
            f"/containers/{_seg(name_or_id)}/stats",
            params=params,
            deadline=self._stats_timeout,
        )
        if not isinstance(raw, dict):
            # The engine answers 200 with an empty body when the container is
            # removed while it collects the sample.
            raise NotFoundError(404, f"{name_or_id}: no stats; the container went away")
        if dj.parse_timestamp(raw.get("read")) == 0:
            # A container that is not running answers zeros with Go's zero
            # time: that is no sample, and zeros would read as counter resets.
            raise ConflictError(409, f"{name_or_id}: not running, so no stats sample")
        with _garbled(f"GET /containers/{name_or_id}/stats"):
            return dj.stats_from_engine(raw, now=time.time())

    @contextlib.asynccontextmanager
    async def container_events(
        self, actions: Sequence[str]
    ) -> AsyncIterator[AsyncIterator[ContainerEvent]]:
        """Open ``GET /events`` for container events of ``actions``; yield their iterator.

        Opening is bounded by the driver's timeout; the stream itself has no
        deadline (the engine writes nothing while nothing happens). Entering
        raises EngineUnreachableError, DriverTimeoutError or DriverError;
        iterating raises EngineUnreachableError when the stream ends or
        breaks, DriverError when a line is not an event.
        """
        prefix = await self._api_prefix()
        # Asking only for these spares us every healthcheck's exec_create/start/die.
        params = {"filters": json.dumps({"type": ["container"], "event": list(actions)})}
        what = "GET /events"
        with self._transport_errors(what, self._timeout):
            async with asyncio.timeout(self._timeout):
                resp = await self._session_or_new().get(
                    prefix + "/events",
                    params=params,
                    allow_redirects=False,
                    # The session's default total deadline would cut the stream.
                    timeout=aiohttp.ClientTimeout(),
                    read_bufsize=MAX_EVENT_LINE,
                )
        try:
            if resp.status != 200:
                raise _error_for(resp.status, await resp.read(), what)
            yield self._events(resp)
        finally:
            resp.release()

    async def _events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[ContainerEvent]:
        what = f"the event stream of {self.endpoint.host}"
        while True:
            try:
                line = await resp.content.readline()
            except ValueError as e:  # a line past the read buffer: not the engine's
                raise DriverError(None, f"{what}: a line over {MAX_EVENT_LINE} bytes") from e
            except (aiohttp.ClientError, OSError) as e:
                raise EngineUnreachableError(f"lost {what}: {e!r}") from e
            if not line:
                raise EngineUnreachableError(f"{what} ended (the engine stopped or restarted)")
            if not line.strip():
                continue
            with _garbled(what):
                yield dj.event_from_engine(json.loads(line))

    async def close(self) -> None:
        """Close the connection pools."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._pull_session is not None:
            await self._pull_session.close()
            self._pull_session = None

    # -- helpers ---------------------------------------------------------

    async def _vpc_network(self, subnet: str) -> str:
        """Return the name of a bridge network for ``subnet``, making it when missing.

        Called with the vpc lock held. A new network must be safe (see
        :func:`exporter.vpc.check_new_subnet`) and within the bound on
        networks the driver keeps; unused ones are swept to make room.
        """
        net = ipaddress.IPv4Network(subnet)
        for attempt in range(2):
            networks = await self._call("GET", "/networks")
            for existing in networks:
                if subnet in _subnets_of(existing):
                    return str(existing["Name"])
            routes = await asyncio.to_thread(self._read_routes)
            vpc.check_new_subnet(
                net,
                self._vpc_pool,
                routes,
                [
                    ipaddress.IPv4Network(s)
                    for existing in networks
                    for s in _subnets_of(existing)
                    if _is_ipv4_network(s)
                ],
            )
            if len(self._own_vpc_networks(networks)) >= self._vpc_max_networks:
                await self._sweep_vpc_networks_locked()
                left = self._own_vpc_networks(await self._call("GET", "/networks"))
                if len(left) >= self._vpc_max_networks:
                    raise vpc.refuse(
                        f"the exporter keeps {len(left)} vpc networks already, all in use "
                        f"(the most allowed: --api.vpc-max-networks)",
                        status=409,
                    )
            name = dj.vpc_network_name(subnet)
            try:
                await self._call(
                    "POST",
                    "/networks/create",
                    body={
                        "Name": name,
                        "Driver": "bridge",
                        "CheckDuplicate": True,
                        "IPAM": {"Config": [{"Subnet": subnet}]},
                        "Labels": {vpc.VPC_LABEL: subnet},
                    },
                )
                log.info("made vpc network %s for %s", name, subnet)
                return name
            except ConflictError:
                if attempt:
                    raise
                # Someone made it between our list and create: list again.
        raise AssertionError("unreachable")

    def _read_routes(self) -> list[vpc.HostRoute]:
        try:
            return vpc.read_routes(self._host_routes)
        except OSError as e:
            # Without the host's routes no subnet can be shown safe.
            raise vpc.refuse(
                f"cannot read the host's routes from {self._host_routes}: {e}", 503
            ) from e

    async def sweep_vpc_networks(self) -> None:
        """Remove the vpc networks this driver made that no container names any more.

        Only networks with the vpc label and a subnet from this driver's pool
        are touched: another exporter's (or a person's) networks are not ours.
        """
        async with self._vpc_lock:
            await self._sweep_vpc_networks_locked()

    def _own_vpc_networks(self, networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the networks this driver made: the vpc label, a subnet from its pool."""
        own = []
        for net in networks:
            subnet = (net.get("Labels") or {}).get(vpc.VPC_LABEL)
            if subnet is None or not _is_ipv4_network(subnet):
                continue
            if any(ipaddress.IPv4Network(subnet).subnet_of(p) for p in self._vpc_pool):
                own.append(net)
        return own

    async def _sweep_vpc_networks_locked(self) -> None:
        if not self._vpc_pool:
            return
        labelled = await self._call("GET", "/networks", params=_vpc_filter())
        for net in self._own_vpc_networks(labelled):
            net_id = str(net["Id"])
            # Created containers count: they have no endpoint yet, and the
            # engine would remove the network under them.
            # By name: a created container's NetworkID is still empty.
            users = await self._call(
                "GET",
                "/containers/json",
                params={"all": "1", "filters": json.dumps({"network": [str(net["Name"])]})},
            )
            if users:
                continue
            try:
                await self._call("DELETE", f"/networks/{_seg(net_id)}")
            except NotFoundError:
                continue
            except DriverError as e:
                # 403/409: a container joined it meanwhile (made by someone else).
                log.info("vpc network %s kept: %s", net.get("Name"), e.message)
                continue
            log.info("removed unused vpc network %s", net.get("Name"))


def _vpc_filter() -> dict[str, str]:
    return {"filters": json.dumps({"label": [vpc.VPC_LABEL]})}


def _subnets_of(network: Mapping[str, Any]) -> list[str]:
    configs = ((network.get("IPAM") or {}).get("Config")) or []
    return [str(c["Subnet"]) for c in configs if c.get("Subnet")]


def _is_ipv4_network(text: str) -> bool:
    try:
        ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return False
    return True


def _seg(name_or_id: str) -> str:
    """Return a path segment that cannot step into another endpoint.

    Quoting alone is not enough: the client drops "." and ".." segments, and the
    engine decodes "%2F", cleans the path and redirects to the result (so
    ``../images/x`` on a DELETE would remove an image). No container name or id
    contains "/" or is a dot segment, so such a name is simply not found.
    """
    name = name_or_id.removeprefix("/")  # the engine's own names start with "/"
    if name in ("", ".", "..") or "/" in name:
        raise NotFoundError(404, f"No such container: {name_or_id}")
    return quote(name, safe="")


@contextlib.contextmanager
def _garbled(what: str) -> Iterator[None]:
    """Translate an answer that is not the JSON we expect into a DriverError."""
    try:
        yield
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        # A proxy's error page or a cut answer: the engine's fault, not ours.
        raise DriverError(None, f"{what}: the engine's answer is not the expected JSON: {e}") from e


def _error_for(status: int, raw: bytes, what: str) -> DriverError:
    """Return the DriverError subclass for an engine error answer."""
    try:
        message = str(json.loads(raw).get("message", "")) or raw.decode(errors="replace")
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace").strip()
    message = message or f"{what} failed"
    if status == 404:
        return NotFoundError(status, message)
    if status == 409:
        return ConflictError(status, message)
    return DriverError(status, message)
