"""A SIMULATED Docker engine: an aiohttp server speaking the few Engine API calls we use.

It exists because the real engine on these machines cannot hold thousands of
containers; it is not an engine and runs no containers. It answers
``/_ping``, ``/version``, ``/info``, the container list, inspect and one-shot
stats for N fake containers, with stats built from a recorded real answer
(``tests/data/engine/stats_v1.json``) whose counters grow with time. Faults
can be injected: a delay per stats call, a share of stats calls that never
answer, and a stall in the middle of a response body. A call that never
answers is held until its client hangs up, so a client that cuts its calls
leaves nothing behind here either: :attr:`SimulatedEngine.holding` counts
the calls held now, and :attr:`SimulatedEngine.calls` how many of each kind
were received and how many were dropped, stalled or delayed.

Containers can be stopped, started and restarted (``POST .../stop``,
``/start``, ``/restart``); every such call is logged in
:attr:`SimulatedEngine.lifecycle` with its time. :meth:`SimulatedEngine.make_sick`
makes a container's memory look sick (its working set at 95% of its limit)
until its next start. ``host`` numbers one engine of a simulated fleet
(:mod:`bench.simfleet`): its container names are unique across the fleet.

Run it as ``python -m bench.simengine --containers 5000 --socket PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import hashlib
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

RECORDED_STATS = (
    Path(__file__).resolve().parent.parent / "tests" / "data" / "engine" / "stats_v1.json"
)
API_VERSION = "1.41"


@dataclass
class Faults:
    """What the simulation does wrong, on purpose."""

    stats_delay: float = 0.0
    stats_drop_ratio: float = 0.0
    stall_body: bool = False


#: A held call gives up after this long even if its client never hangs up.
HOLD_MAX_SECONDS = 600.0
#: How many requests :attr:`SimulatedEngine.requests` remembers.
REQUESTS_KEPT = 10_000
#: How many lifecycle calls :attr:`SimulatedEngine.lifecycle` remembers.
LIFECYCLE_KEPT = 100_000
#: The memory limit every simulated container has (inspect's HostConfig.Memory).
MEMORY_LIMIT = 67_108_864
#: A sick container's working set, as a share of its limit (the rules alert above 0.9).
SICK_RATIO = 0.95
#: Events an open stream may have pending; past it the stream is cut, as dockerd cuts one.
EVENTS_KEPT = 1024


@dataclass(frozen=True)
class LifecycleCall:
    """One stop, start or restart the simulated engine received."""

    at: float
    host: int
    op: str
    name: str
    status: int


def _container_id(i: int, host: int = 0) -> str:
    return hashlib.sha256(
        f"sim-{i}".encode() if not host else f"sim-{host}-{i}".encode()
    ).hexdigest()


def _stamp(t: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    return f"{whole}.{int((t % 1) * 1e9):09d}Z"


class SimulatedEngine:
    """N fake containers behind the Engine API routes the exporter calls."""

    def __init__(
        self,
        containers: int,
        faults: Faults | None = None,
        started: float | None = None,
        seed: int | None = None,
        host: int = 0,
    ) -> None:
        self.host = host
        self.faults = faults or Faults()
        self.started = time.time() if started is None else started
        self._stats_template: dict[str, Any] = json.loads(RECORDED_STATS.read_text())
        self.calls: dict[str, int] = {
            "list": 0,
            "inspect": 0,
            "stats": 0,
            "stats_dropped": 0,
            "stats_stalled": 0,
            "stats_delayed": 0,
        }
        #: Calls held open right now (dropped or stalled, their client still connected).
        self.holding = 0
        #: (method, raw path) of the latest requests, every route or none.
        self.requests: collections.deque[tuple[str, str]] = collections.deque(maxlen=REQUESTS_KEPT)
        self._random = random.Random(seed)
        #: Every stop, start and restart received, oldest first.
        self.lifecycle: collections.deque[LifecycleCall] = collections.deque(maxlen=LIFECYCLE_KEPT)
        self._containers: dict[str, dict[str, Any]] = {}
        self._by_name: dict[str, str] = {}
        # One queue per open event stream (GET /events), bounded: a stalled reader is cut.
        self._subscribers: list[asyncio.Queue[dict[str, Any]]] = []
        for i in range(containers):
            self.add(i)

    def add(self, i: int) -> str:
        """Add container number ``i`` (name ``app-<hex>-<replica>``) and return its id."""
        cid = _container_id(i, self.host)
        # Host h owns apps 0x10000000 + h * 0x10000 ...: names never repeat across a fleet.
        app = f"{(i // 16) + 0x10000000 + self.host * 0x10000:08x}"
        name = f"app-{app}-{i % 16:04x}"
        self._containers[cid] = {
            "i": i,
            "name": name,
            "running": True,
            "started": self.started,
            "pid": 1000 + i,
            "sick": False,
        }
        self._by_name[name] = cid
        self._emit("create", cid)
        self._emit("start", cid)
        return cid

    def remove(self, cid: str) -> None:
        """Remove a container."""
        if cid in self._containers:
            self._emit("destroy", cid)
        c = self._containers.pop(cid, None)
        if c is not None:
            self._by_name.pop(c["name"], None)

    def names(self) -> list[str]:
        """Return the names of every container."""
        return [c["name"] for c in self._containers.values()]

    def make_sick(self, name: str) -> None:
        """Make ``name``'s memory look sick until its next start; KeyError if unknown."""
        self._containers[self._by_name[name]]["sick"] = True

    def _emit(self, action: str, cid: str) -> None:
        name = self._containers[cid]["name"]
        event = {
            "Type": "container",
            "Action": action,
            "Actor": {"ID": cid, "Attributes": {"name": name}},
            "timeNano": time.time_ns(),
        }
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.remove(queue)  # the stream is cut at its next wait

    def ids(self) -> list[str]:
        """Return the ids of every container."""
        return list(self._containers)

    def app(self) -> web.Application:
        """Return the aiohttp application serving the simulated API."""
        app = web.Application(middlewares=[self._remember])
        app.router.add_get("/_ping", self._ping)
        app.router.add_get(f"/v{API_VERSION}/version", self._version)
        app.router.add_get(f"/v{API_VERSION}/info", self._info)
        app.router.add_get(f"/v{API_VERSION}/containers/json", self._list)
        app.router.add_get(f"/v{API_VERSION}/containers/{{id}}/json", self._inspect)
        app.router.add_get(f"/v{API_VERSION}/containers/{{id}}/stats", self._stats)
        for op in ("stop", "start", "restart"):
            app.router.add_post(f"/v{API_VERSION}/containers/{{id}}/{op}", self._lifecycle)
        app.router.add_get(f"/v{API_VERSION}/events", self._events)
        return app

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Stream the containers' create, start and destroy events, one JSON object a line."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(EVENTS_KEPT)
        self._subscribers.append(queue)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(request)
            while queue in self._subscribers:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        event = await queue.get()
                        await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(queue)
        return response

    @web.middleware
    async def _remember(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.raw_path))
        return await handler(request)

    async def _hold(self, request: web.Request) -> None:
        """Return once the client has hung up (or after HOLD_MAX_SECONDS)."""
        self.holding += 1
        try:
            deadline = time.monotonic() + HOLD_MAX_SECONDS
            while time.monotonic() < deadline:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                await asyncio.sleep(0.05)
        finally:
            self.holding -= 1

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="OK", headers={"Api-Version": API_VERSION})

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"Version": "simulated", "ApiVersion": API_VERSION, "Os": "linux", "Arch": "amd64"}
        )

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "OperatingSystem": "simulation",
                "KernelVersion": "0",
                "Containers": len(self._containers),
                "Images": 1,
            }
        )

    def _find(self, request: web.Request) -> tuple[str, dict[str, Any]]:
        key = request.match_info["id"]
        if key in self._containers:
            return key, self._containers[key]
        cid = self._by_name.get(key)
        if cid is not None:
            return cid, self._containers[cid]
        raise web.HTTPNotFound(
            text=json.dumps({"message": f"No such container: {key}"}),
            content_type="application/json",
        )

    async def _list(self, request: web.Request) -> web.Response:
        self.calls["list"] += 1
        created = int(self.started)
        return web.json_response(
            [
                {
                    "Id": cid,
                    "Names": ["/" + c["name"]],
                    "Image": "local/busybox:latest",
                    "ImageID": "sha256:" + "0" * 64,
                    "Created": created,
                    "State": "running" if c["running"] else "exited",
                    "Status": "Up" if c["running"] else "Exited (0)",
                    "Labels": {"io.sysinner.sim": "1"},
                    "Ports": [],
                    "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
                }
                for cid, c in self._containers.items()
            ]
        )

    async def _inspect(self, request: web.Request) -> web.Response:
        self.calls["inspect"] += 1
        cid, c = self._find(request)
        stamp = _stamp(self.started)
        running = c["running"]
        return web.json_response(
            {
                "Id": cid,
                "Name": "/" + c["name"],
                "Created": stamp,
                "Image": "sha256:" + "0" * 64,
                "State": {
                    "Status": "running" if running else "exited",
                    "Running": running,
                    "Pid": c["pid"] if running else 0,
                    "StartedAt": _stamp(c["started"]),
                },
                "Config": {"Image": "local/busybox:latest", "Labels": {"io.sysinner.sim": "1"}},
                "HostConfig": {"NanoCpus": 500_000_000, "Memory": MEMORY_LIMIT, "Binds": []},
                "NetworkSettings": {"IPAddress": "172.17.0.2", "Ports": {}},
            }
        )

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        self.calls["stats"] += 1
        _, c = self._find(request)
        faults = self.faults
        if faults.stats_drop_ratio and self._random.random() < faults.stats_drop_ratio:
            # Never answers: the caller's deadline must cut it.
            self.calls["stats_dropped"] += 1
            await self._hold(request)
            raise web.HTTPServiceUnavailable(text="dropped")
        if faults.stats_delay:
            self.calls["stats_delayed"] += 1
            await asyncio.sleep(faults.stats_delay)
        doc = copy.deepcopy(self._stats_template)
        grow = int((time.time() - self.started) * 1000) + c["i"]
        doc["cpu_stats"]["cpu_usage"]["total_usage"] += grow * 1_000_000
        doc["memory_stats"]["usage"] += c["i"] * 4096
        if c["sick"]:
            inactive = doc["memory_stats"]["stats"].get("total_inactive_file", 0)
            doc["memory_stats"]["usage"] = int(MEMORY_LIMIT * SICK_RATIO) + inactive
        doc["read"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        body = json.dumps(doc).encode()
        if not faults.stall_body:
            return web.Response(body=body, content_type="application/json")
        self.calls["stats_stalled"] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        await self._hold(request)  # stalls mid-body until the client gives up
        return response

    async def _lifecycle(self, request: web.Request) -> web.Response:
        """Stop, start or restart a container, as the engine answers (204, or 304 if no-op)."""
        op = request.path.rsplit("/", 1)[1]
        self.calls[op] = self.calls.get(op, 0) + 1
        try:
            _, c = self._find(request)
        except web.HTTPNotFound:
            name = request.match_info["id"]
            self.lifecycle.append(LifecycleCall(time.time(), self.host, op, name, 404))
            raise
        status = 204
        if (op == "stop" and not c["running"]) or (op == "start" and c["running"]):
            status = 304
        if op in ("stop", "restart"):
            c["running"] = False
        if op in ("start", "restart") and not c["running"]:
            c["running"] = True
            c["started"] = time.time()
            c["pid"] += 1
            c["sick"] = False  # sick until its next start
        self.lifecycle.append(LifecycleCall(time.time(), self.host, op, c["name"], status))
        return web.Response(status=status)


def listen_backlog() -> int:
    """Return the kernel's cap on a listen backlog, which dockerd (Go's net.Listen) asks for."""
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4096


async def serve(engine: SimulatedEngine, socket_path: str) -> web.AppRunner:
    """Start serving ``engine`` on a unix socket and return the runner (call ``cleanup``)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)  # a stale socket of an earlier run
    runner = web.AppRunner(engine.app(), access_log=None)
    await runner.setup()
    # aiohttp's default backlog is 128. A busy shard serving ten hosts then overflows it,
    # and a unix connect() that overflows fails (EAGAIN, which asyncio then reports as
    # ENOTCONN on the first write): failures a real dockerd, listening with the kernel's
    # cap as Go does, would not have. Listen as dockerd does.
    await web.UnixSite(runner, socket_path, backlog=listen_backlog()).start()
    return runner


def main() -> None:
    """Serve a simulated engine until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--stats-delay", type=float, default=0.0, help="seconds per stats call")
    parser.add_argument(
        "--stats-drop-ratio", type=float, default=0.0, help="share of stats calls never answered"
    )
    parser.add_argument("--stall-body", action="store_true", help="stall every stats body midway")
    args = parser.parse_args()
    faults = Faults(args.stats_delay, args.stats_drop_ratio, args.stall_body)

    async def run() -> None:
        runner = await serve(SimulatedEngine(args.containers, faults), args.socket)
        print("ready", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())


if __name__ == "__main__":
    main()
