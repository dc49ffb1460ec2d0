"""A SIMULATED fleet: many simulated Docker engines (hosts) served from one process.

Not a fleet and not an engine: each host is a :class:`bench.simengine.SimulatedEngine`
on its own unix socket, with container names unique across the fleet. The
fleet benchmark (:mod:`bench.fleet`) runs one exporter per host against it.
A control API on 127.0.0.1 (``--control-port``) makes a container's memory
look sick until its next start and returns the log of every lifecycle call:

- ``GET /hosts``: ``[{"host": h, "socket": path, "names": [...]}]``
- ``POST /sick`` ``{"name": ...}``: that container looks sick until it starts again
- ``GET /lifecycle``: ``[{"at", "host", "op", "name", "status"}]``, oldest first

Run it as ``python -m bench.simfleet --hosts 50 --containers 100 --dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.simengine import SimulatedEngine, serve


class SimulatedFleet:
    """N simulated hosts x M containers, each host on ``<dir>/host-<n>.sock``."""

    def __init__(self, hosts: int, containers: int, directory: Path) -> None:
        self.directory = directory
        # Host numbers start at 1: host 0's names are the single simulated engine's.
        self.engines = [SimulatedEngine(containers, host=h) for h in range(1, hosts + 1)]
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

    def lifecycle(self) -> list[dict[str, Any]]:
        """Return every host's lifecycle calls, oldest first."""
        calls = [dataclasses.asdict(c) for e in self.engines for c in e.lifecycle]
        return sorted(calls, key=lambda c: float(c["at"]))

    def control_app(self) -> web.Application:
        """Return the control API's application."""
        app = web.Application()

        async def hosts(request: web.Request) -> web.Response:
            return web.json_response(
                [
                    {"host": e.host, "socket": self.socket(e), "names": e.names()}
                    for e in self.engines
                ]
            )

        async def sick(request: web.Request) -> web.Response:
            body = await request.json()
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str) or name not in self._owner:
                return web.json_response({"error": f"name: no container {name!r}"}, status=404)
            self.make_sick(name)
            return web.json_response({"name": name, "sick": True})

        async def lifecycle(request: web.Request) -> web.Response:
            return web.json_response(self.lifecycle())

        app.router.add_get("/hosts", hosts)
        app.router.add_post("/sick", sick)
        app.router.add_get("/lifecycle", lifecycle)
        return app


def main() -> None:
    """Serve a simulated fleet and its control API until killed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--control-port", type=int, default=0)
    args = parser.parse_args()

    async def run() -> None:
        fleet = SimulatedFleet(args.hosts, args.containers, args.dir)
        await fleet.start()
        runner = web.AppRunner(fleet.control_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.control_port)
        await site.start()
        port = runner.addresses[0][1]
        print(f"ready {port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await fleet.close()

    asyncio.run(run())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
