"""``/api/v1``: engine info, containers, images and replica deploys.

Reads may name any container; every mutating call acts only on managed
names (403 otherwise, before the engine is asked anything), and create is
confined by :mod:`exporter.confinement`. Errors become JSON in
:mod:`exporter.api.errors`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel

from exporter import vpc
from exporter.api.errors import ApiError, parse_body
from exporter.api.keys import (
    DEPLOYER,
    DRIVER,
    MOUNT_POLICY,
    NAMING,
    POLLER,
    REMEDIATION,
    SETTINGS,
)
from exporter.api.openapi import Operation, Param
from exporter.config import flag_name
from exporter.confinement import check_image, check_managed
from exporter.errors import (
    DriverError,
    DriverTimeoutError,
    EngineUnreachableError,
    NotFoundError,
)
from exporter.models import (
    AppReplicaInstance,
    ContainerCreateOptions,
    ContainerInfo,
    ContainerState,
    DriverInfo,
    ImageInfo,
    ImageReference,
    PortBinding,
)
from exporter.replica_deploy import (
    DeployResult,
    ReplicaDeployer,
    ReplicaHostNotReadyError,
    ReplicaImageMissingError,
    ReplicaSpecError,
    ReplicaStartError,
)

V1 = "/api/v1"


# -- answers and bodies ------------------------------------------------------


class Pong(BaseModel):
    """The engine answered."""

    status: str = Field(description="always ok")


class ContainerBody(RootModel[ContainerInfo]):
    """One container in full, as inspected."""


_UNKNOWN = "; null when not known: the engine's list answer lacks it and the exporter's last poll did not inspect this container as it is now (GET /containers/{name} has it)"  # noqa: E501


class ContainerListEntry(BaseModel):
    """A container as listed: the engine's list answer, completed from the last poll's inspect."""

    id: str
    name: str
    image: str = ""
    image_id: str = ""
    state: ContainerState
    status: str = Field(default="", description="the engine's detailed status")
    ip: str = ""
    ports: dict[int, PortBinding] = Field(default_factory=dict)
    created: int = Field(default=0, description="unix seconds")
    labels: dict[str, str] = Field(default_factory=dict)
    pid: int | None = Field(
        default=None, description="host pid of the container's init; 0 if not running" + _UNKNOWN
    )
    started: int | None = Field(
        default=None, description="unix seconds; 0 if never started" + _UNKNOWN
    )
    cpu_limit: int | None = Field(default=None, description="millicores; 0 is none" + _UNKNOWN)
    memory_limit: int | None = Field(default=None, description="bytes; 0 is none" + _UNKNOWN)


class ContainerList(RootModel[list[ContainerListEntry]]):
    """Containers, as the engine lists them, completed from the exporter's last poll."""


def list_entry(listed: ContainerInfo, polled: ContainerInfo | None) -> ContainerListEntry:
    """Return ``listed`` with what the list answer lacks taken from ``polled`` (or null)."""
    entry = ContainerListEntry(
        id=listed.id,
        name=listed.name,
        image=listed.image,
        image_id=listed.image_id,
        state=listed.state,
        status=listed.status,
        ip=listed.ip,
        ports=listed.ports,
        created=listed.created,
        labels=listed.labels,
    )
    if listed.state is not ContainerState.RUNNING:
        entry.pid = 0  # no init runs: a fact, not a gap
    if polled is None or polled.id != listed.id:
        return entry
    entry.cpu_limit, entry.memory_limit = polled.cpu_limit, polled.memory_limit
    if polled.state is listed.state:
        # Same state as at the poll: the same run, so the same init and start time.
        entry.pid, entry.started = polled.pid, polled.started
    return entry


class ImageList(RootModel[list[ImageInfo]]):
    """Images the engine holds."""


class ImagePullRequest(BaseModel):
    """An image to pull."""

    model_config = ConfigDict(extra="forbid")

    image: Annotated[ImageReference, Field(min_length=1, max_length=512)] = Field(
        description="image reference; the tag defaults to latest"
    )


class ImagePulled(BaseModel):
    """The image is present."""

    image: str
    status: str = Field(description="always pulled")


class ReplicaDeployed(BaseModel):
    """What a replica post did."""

    result: DeployResult
    name: str = Field(description="the replica's container name")
    revision: int
    container: ContainerInfo | None = Field(
        default=None, description="the new container; null when unchanged"
    )


class StoredReplica(BaseModel):
    """A replica the host keeps, by container name."""

    name: str
    revision: int
    instance: AppReplicaInstance


class ReplicaList(RootModel[list[StoredReplica]]):
    """Every replica the host keeps."""


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


def query_flag(request: web.Request, name: str) -> bool:
    """Return a boolean query parameter (1/true/0/false, absent is false); 400 otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return False
    value = raw.lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise ApiError(400, f"query parameter {name}: {raw!r} is not one of 1, true, 0, false")


# -- handlers ------------------------------------------------------------


async def info(request: web.Request) -> web.Response:
    """Return what the engine is and how much it holds."""
    return _json(await request.app[DRIVER].info())


async def ping(request: web.Request) -> web.Response:
    """Answer ok when the engine answers."""
    await request.app[DRIVER].ping()
    return _json(Pong(status="ok"))


async def list_containers(request: web.Request) -> web.Response:
    """List managed containers, or every container with ``?all=1``."""
    everything = query_flag(request, "all")
    naming = request.app[NAMING]
    items = await request.app[DRIVER].container_list()
    if not everything:
        items = [c for c in items if naming.is_valid(c.name)]
    # The poll inspects every container it tracks; the list answer has no pid or limits.
    polled = {s.info.id: s.info for s in request.app[POLLER].snapshot.containers}
    return _json(ContainerList([list_entry(c, polled.get(c.id)) for c in items]))


async def get_container(request: web.Request) -> web.Response:
    """Return one container, managed or not, by name or id."""
    return _json(
        ContainerBody(await request.app[DRIVER].container_inspect(request.match_info["name"]))
    )


async def _managed(request: web.Request) -> str:
    """Return the path's container name once it is managed and exists (403, 404)."""
    name = request.match_info["name"]
    check_managed(name, request.app[NAMING].is_valid(name))
    info = await request.app[DRIVER].container_inspect(name)
    if info.name != name:
        # The engine matched an id or prefix, not this name: act only on the name given.
        raise ApiError(404, "not found", f"no container named {name!r}")
    return name


async def create_container(request: web.Request) -> web.Response:
    """Create a managed container, confined by the mount and image policies."""
    opts = await parse_body(request, ContainerCreateOptions)
    settings = request.app[SETTINGS]
    check_managed(opts.name, request.app[NAMING].is_valid(opts.name))
    check_image(opts.image, settings.api_image_allowlist)
    if opts.vpc_subnet:
        # Refused before the mount policy makes any source dir (the driver checks again).
        vpc.check_in_pool(
            ipaddress.IPv4Network(opts.vpc_subnet), vpc.parse_pool(settings.api_vpc_subnet_pool)
        )
    created = await request.app[MOUNT_POLICY].create(request.app[DRIVER], opts)
    return _json(ContainerBody(created), status=201)


async def start_container(request: web.Request) -> web.Response:
    """Start a managed container and return it; remediation may act on it again."""
    name = await _managed(request)
    driver = request.app[DRIVER]
    await driver.container_start(name)
    await _hand_back_to_remediation(request, name)
    return _json(ContainerBody(await driver.container_inspect(name)))


async def stop_container(request: web.Request) -> web.Response:
    """Stop a managed container and return it; alerts leave it stopped until it is started."""
    name = await _managed(request)
    driver = request.app[DRIVER]
    remediation = request.app.get(REMEDIATION)
    if remediation is not None:
        # Before the stop: no alert may start what the operator is stopping.
        await remediation.hold(name)
    await driver.container_stop(name)
    return _json(ContainerBody(await driver.container_inspect(name)))


async def restart_container(request: web.Request) -> web.Response:
    """Stop then start a managed container and return it."""
    name = await _managed(request)
    driver = request.app[DRIVER]
    await driver.container_stop(name)
    await driver.container_start(name)
    await _hand_back_to_remediation(request, name)
    return _json(ContainerBody(await driver.container_inspect(name)))


async def _hand_back_to_remediation(request: web.Request, name: str) -> None:
    """End an operator's stop of ``name``: it was started through the API."""
    remediation = request.app.get(REMEDIATION)
    if remediation is not None:
        await remediation.release(name)


async def delete_container(request: web.Request) -> web.Response:
    """Remove a managed container (forced) and forget its replica; the pod dir stays."""
    name = await _managed(request)
    deployer = request.app.get(DEPLOYER)
    if deployer is None:
        await request.app[DRIVER].container_remove(name)
    else:
        # Under the replica's deploy lock, with any leftover of a cut deploy.
        await deployer.remove(name)
    return web.Response(status=204)


async def list_images(request: web.Request) -> web.Response:
    """List the engine's images."""
    return _json(ImageList(await request.app[DRIVER].image_list()))


async def pull_image(request: web.Request) -> web.Response:
    """Pull an image within the pull deadline; a clear error when the registry fails."""
    body = await parse_body(request, ImagePullRequest)
    settings = request.app[SETTINGS]
    check_image(body.image, settings.api_image_allowlist)
    deadline = settings.api_pull_timeout
    try:
        async with asyncio.timeout(deadline):
            await request.app[DRIVER].image_pull(body.image)
    except TimeoutError as e:
        raise DriverTimeoutError(f"pull {body.image}: not done within {deadline:g}s") from e
    except (NotFoundError, EngineUnreachableError, DriverTimeoutError):
        raise
    except DriverError as e:
        # The engine answers 500 when the registry is unreachable or refuses.
        raise ApiError(
            400 if e.status == 400 else 502, f"cannot pull {body.image}", e.message
        ) from e
    return _json(ImagePulled(image=body.image, status="pulled"))


def _deployer(request: web.Request) -> ReplicaDeployer:
    deployer = request.app.get(DEPLOYER)
    if deployer is None:
        raise ApiError(503, "replica deploys are not configured", "start the exporter with serve")
    return deployer


async def post_replica(request: web.Request) -> web.Response:
    """Deploy a replica when it is new or of a newer revision; else answer unchanged."""
    rep = await parse_body(request, AppReplicaInstance)
    deployer = _deployer(request)
    check_image(rep.app.spec.image, request.app[SETTINGS].api_image_allowlist)
    try:
        done = await deployer.deploy(rep)
    except ReplicaSpecError as e:
        raise ApiError(422, str(e), e.errors) from e
    except ReplicaImageMissingError as e:
        raise ApiError(
            404, str(e), [{"field": e.field, "message": e.message, "type": "not_found"}]
        ) from e
    except ReplicaHostNotReadyError as e:
        raise ApiError(503, str(e), {"missing": e.path, "setting": flag_name("host_prefix")}) from e
    except ReplicaStartError as e:
        raise ApiError(
            502,
            str(e),
            {"reason": e.reason, "message": e.detail, "rollback_error": e.rollback_error},
        ) from e
    except OSError as e:
        raise ApiError(503, "cannot lay out the pod dir", str(e)) from e
    answer = ReplicaDeployed(
        result=done.result, name=done.name, revision=done.revision, container=done.container
    )
    return _json(answer, status=201 if done.result is DeployResult.CREATED else 200)


async def list_replicas(request: web.Request) -> web.Response:
    """List the replicas the host keeps."""
    stored = _deployer(request).replicas.snapshot()
    return _json(
        ReplicaList(
            [
                StoredReplica(name=name, revision=rep.deploy_revision, instance=rep)
                for name, rep in sorted(stored.items())
            ]
        )
    )


ALL_FLAG: dict[str, Any] = {"type": "string", "enum": ["0", "1", "false", "true"]}

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", f"{V1}/info", info, "getInfo", "engine facts", 200, DriverInfo, (502, 503)),
    Operation("GET", f"{V1}/ping", ping, "ping", "the engine answers", 200, Pong, (502, 503)),
    Operation(
        "GET",
        f"{V1}/containers",
        list_containers,
        "listContainers",
        "managed containers (all with ?all=1)",
        200,
        ContainerList,
        (400, 502, 503),
        query=(Param("all", ALL_FLAG, "list every container, managed or not"),),
    ),
    Operation(
        "POST",
        f"{V1}/containers",
        create_container,
        "createContainer",
        "create (not start) a managed container",
        201,
        ContainerBody,
        (404, 409, 502, 503),
        request=ContainerCreateOptions,
    ),
    Operation(
        "GET",
        f"{V1}/containers/{{name}}",
        get_container,
        "getContainer",
        "one container by name or id",
        200,
        ContainerBody,
        (404, 502, 503),
    ),
    Operation(
        "DELETE",
        f"{V1}/containers/{{name}}",
        delete_container,
        "deleteContainer",
        "remove a managed container (its pod dir stays)",
        204,
        None,
        (404, 409, 502, 503),
        managed_name=True,
    ),
    *(
        Operation(
            "POST",
            f"{V1}/containers/{{name}}/{verb}",
            handler,
            f"{verb}Container",
            f"{verb} a managed container",
            200,
            ContainerBody,
            (404, 409, 502, 503),
            managed_name=True,
        )
        for verb, handler in (
            ("start", start_container),
            ("stop", stop_container),
            ("restart", restart_container),
        )
    ),
    Operation(
        "GET", f"{V1}/images", list_images, "listImages", "images", 200, ImageList, (502, 503)
    ),
    Operation(
        "POST",
        f"{V1}/images/pull",
        pull_image,
        "pullImage",
        "pull an image (bounded wait)",
        200,
        ImagePulled,
        (404, 429, 502, 503),
        request=ImagePullRequest,
    ),
    Operation(
        "POST",
        f"{V1}/replicas",
        post_replica,
        "postReplica",
        "deploy a replica when new or of a newer revision (201 created, 200 otherwise); "
        "422 names the bad field, 404 a missing image, 502 a replica that did not start "
        "(rolled back), 503 a host without ininit",
        201,
        ReplicaDeployed,
        (404, 409, 502, 503),
        request=AppReplicaInstance,
        tag="replicas",
        also_ok=(200,),
    ),
    Operation(
        "GET",
        f"{V1}/replicas",
        list_replicas,
        "listReplicas",
        "replicas the host keeps",
        200,
        ReplicaList,
        (503,),
        tag="replicas",
    ),
)
