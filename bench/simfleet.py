"""A SIMULATED fleet: many simulated Docker engines (hosts), served by one or more processes.

Not a fleet and not an engine: each host is a :class:`bench.simengine.SimulatedEngine`
on its own unix socket, with container names unique across the fleet. The
fleet benchmark (:mod:`bench.fleet`) runs one exporter per host against it.
A control API on 127.0.0.1 (``--control-port``) makes a container's memory
look sick until its next start and returns the log of every lifecycle call:

- ``GET /hosts``: ``[{"host": h, "socket": path, "names": [...], "pid": p}]``
  (``pid``: the process serving that host)
- ``POST /sick`` ``{"name": ...}``: that container looks sick until it starts again
- ``GET /lifecycle``: ``[{"at", "host", "op", "name", "status"}]``, oldest first

With ``--shards K`` (K > 1) the hosts are split into K contiguous ranges, each
served by a child process of its own (``python -m bench.simfleet`` with
``--first-host``), and this process only serves the control API, asking every
shard and merging the answers. One Python process answers every call on one
core, and the kernel gives it one runnable task's share of the CPU; when the
fleet benchmark runs ~100 other processes on two cores (exporters, Prometheus
agents), a single process serving 5,000 containers fell seconds behind. A
shard exits when its stdin closes, so killing this process ends them all.

Run it as ``python -m bench.simfleet --hosts 50 --containers 100 --dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.simengine import SimulatedEngine, serve

ROOT = Path(__file__).resolve().parent.parent
#: Default hosts per shard process (``--shards`` unset). Measured with the fleet
#: benchmark at 50 x 100 in agent mode on 2 vCPUs; see the README's "Running a fleet".
HOSTS_PER_SHARD = 10


def default_shards(hosts: int) -> int:
    """Return how many shard processes serve ``hosts`` simulated hosts by default."""
    return max(1, -(-hosts // HOSTS_PER_SHARD))


def split(hosts: int, shards: int, first: int = 1) -> list[tuple[int, int]]:
    """Return ``(first host, host count)`` per shard: contiguous, sizes differing by 1 at most."""
    shards = max(1, min(shards, hosts))
    out = []
    for k in range(shards):
        count = hosts // shards + (1 if k < hosts % shards else 0)
        out.append((first, count))
        first += count
    return out


class SimulatedFleet:
    """N simulated hosts x M containers, each host on ``<dir>/host-<n>.sock``, in this process."""

    def __init__(self, hosts: int, containers: int, directory: Path, first_host: int = 1) -> None:
        self.directory = directory
        # Host numbers start at 1: host 0's names are the single simulated engine's.
        self.engines = [
            SimulatedEngine(containers, host=h) for h in range(first_host, first_host + hosts)
        ]
        self._owner = {name: e for e in self.engines for name in e.names()}
        self._runners: list[web.AppRunner] = []

    def socket(self, engine: SimulatedEngine) -> str:
        """Return the unix socket path of one host."""
        return str(self.directory / f"host-{engine.host}.sock")

    async def start(self) -> None:
        """Serve every host on its socket."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for engine in self.engines:
            self._runners.append(await serve(engine, self.socket(engine)))

    async def close(self) -> None:
        """Stop serving every host."""
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    def make_sick(self, name: str) -> None:
        """Make ``name`` look sick on whichever host has it; KeyError if none has."""
        self._owner[name].make_sick(name)

    def hosts(self) -> list[dict[str, Any]]:
        """Return each host's number, socket, container names and serving process."""
        return [
            {"host": e.host, "socket": self.socket(e), "names": e.names(), "pid": os.getpid()}
            for e in self.engines
        ]

    def lifecycle(self) -> list[dict[str, Any]]:
        """Return every host's lifecycle calls, oldest first."""
        calls = [dataclasses.asdict(c) for e in self.engines for c in e.lifecycle]
        return sorted(calls, key=lambda c: float(c["at"]))

    def control_app(self) -> web.Application:
        """Return the control API's application."""

        async def sick(name: str) -> bool:
            if name not in self._owner:
                return False
            self.make_sick(name)
            return True

        async def hosts() -> list[dict[str, Any]]:
            return self.hosts()

        async def lifecycle() -> list[dict[str, Any]]:
            return self.lifecycle()

        return control_app(hosts, sick, lifecycle)


class Shards:
    """Shard processes, each a :class:`SimulatedFleet` over a range of hosts, behind one API."""

    def __init__(self, hosts: int, containers: int, directory: Path, shards: int) -> None:
        self.ranges = split(hosts, shards)
        self.containers = containers
        self.directory = directory
        self.procs: list[asyncio.subprocess.Process] = []
        self.urls: list[str] = []
        self._owner: dict[str, str] = {}  # name -> the URL of the shard serving it
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start every shard; return once each serves its hosts."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        for first, count in self.ranges:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.simfleet",
                "--hosts",
                str(count),
                "--first-host",
                str(first),
                "--containers",
                str(self.containers),
                "--dir",
                str(self.directory),
                "--shards",
                "1",
                # The shard's stdin is this process's pipe: it closes when we die.
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode().split()
            if line[:1] != ["ready"]:
                raise RuntimeError(f"a shard did not start (said {line!r})")
            self.urls.append(f"http://127.0.0.1:{line[1]}")
        for url, hosts in zip(self.urls, await self._each("/hosts"), strict=True):
            for h in hosts:
                for name in h["names"]:
                    self._owner[name] = url

    async def close(self) -> None:
        """Stop every shard and wait for it."""
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()  # the shard's cue to exit
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._http is not None:
            await self._http.close()

    async def _each(self, path: str) -> list[Any]:
        assert self._http is not None
        http = self._http

        async def get(url: str) -> Any:
            async with http.get(url + path) as r:
                r.raise_for_status()
                return await r.json()

        return list(await asyncio.gather(*(get(u) for u in self.urls)))

    async def hosts(self) -> list[dict[str, Any]]:
        """Return every shard's hosts, in host order."""
        return sorted((h for hosts in await self._each("/hosts") for h in hosts), key=_host)

    async def sick(self, name: str) -> bool:
        """Make ``name`` sick on the shard serving it; False if none does."""
        url = self._owner.get(name)
        if url is None:
            return False
        assert self._http is not None
        async with self._http.post(url + "/sick", json={"name": name}) as r:
            return r.status == 200

    async def lifecycle(self) -> list[dict[str, Any]]:
        """Return every shard's lifecycle calls, oldest first (one clock: one machine)."""
        calls = [c for log in await self._each("/lifecycle") for c in log]
        return sorted(calls, key=lambda c: float(c["at"]))

    def control_app(self) -> web.Application:
        """Return the control API's application, answered by the shards."""
        return control_app(self.hosts, self.sick, self.lifecycle)


def _host(h: dict[str, Any]) -> int:
    return int(h["host"])


def control_app(
    hosts: Callable[[], Awaitable[list[dict[str, Any]]]],
    sick: Callable[[str], Awaitable[bool]],
    lifecycle: Callable[[], Awaitable[list[dict[str, Any]]]],
) -> web.Application:
    """Return the control API over whatever serves the hosts (this process or shards)."""
    app = web.Application()

    async def get_hosts(request: web.Request) -> web.Response:
        return web.json_response(await hosts())

    async def post_sick(request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not await sick(name):
            return web.json_response({"error": f"name: no container {name!r}"}, status=404)
        return web.json_response({"name": name, "sick": True})

    async def get_lifecycle(request: web.Request) -> web.Response:
        return web.json_response(await lifecycle())

    app.router.add_get("/hosts", get_hosts)
    app.router.add_post("/sick", post_sick)
    app.router.add_get("/lifecycle", get_lifecycle)
    return app


async def _until_stdin_closes(stop: asyncio.Event) -> None:
    """Set ``stop`` once stdin reaches its end (a shard's parent closed it or died)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    stop.set()


def main() -> None:
    """Serve a simulated fleet and its control API until killed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument(
        "--shards",
        type=int,
        default=0,
        help=f"processes serving the hosts (default: one per {HOSTS_PER_SHARD} hosts)",
    )
    parser.add_argument(
        "--first-host", type=int, default=0, help="a shard's first host (set by its parent)"
    )
    args = parser.parse_args()
    shards = args.shards or default_shards(args.hosts)

    async def run() -> None:
        served: SimulatedFleet | Shards
        if shards > 1:
            served = Shards(args.hosts, args.containers, args.dir, shards)
        else:
            served = SimulatedFleet(args.hosts, args.containers, args.dir, args.first_host or 1)
        try:
            await served.start()
            runner = web.AppRunner(served.control_app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", args.control_port)
            await site.start()
            port = runner.addresses[0][1]
            print(f"ready {port}", flush=True)
            stop = asyncio.Event()
            # SIGTERM ends the run through its finally blocks: the shards are told to exit.
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            watcher = asyncio.create_task(_until_stdin_closes(stop)) if args.first_host else None
            try:
                await stop.wait()
            finally:
                if watcher is not None:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                await runner.cleanup()
        finally:
            await served.close()

    asyncio.run(run())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
