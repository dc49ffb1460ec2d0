"""An Alertmanager cluster of Debian's ``prometheus-alertmanager`` peers on 127.0.0.1.

Each peer has its own storage dir, web port and cluster port; the second and
later peers join the first with ``--cluster.peer``. Alerts are not gossiped
between peers (Prometheus sends every alert to every peer): :meth:`post_alerts`
posts to each live peer, as Prometheus does. Silences are gossiped.
Every process is stopped by its own handle in :meth:`AlertmanagerCluster.close`.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import yaml

#: A receiver with no configs: alerts are kept and served by the API, sent nowhere.
SINK_CONFIG: dict[str, Any] = {
    "route": {"receiver": "sink", "group_wait": "1s", "group_interval": "1s"},
    "receivers": [{"name": "sink"}],
}


#: Ports already handed out by this process: a port is free until its user binds it, so
#: without this two calls before the binds may return the same one.
_GIVEN: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 nothing listens on now, never the same one twice."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def alertmanager_binary() -> str | None:
    """Return the path of Debian's Alertmanager, or None."""
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@dataclass
class Peer:
    """One Alertmanager process."""

    index: int
    web_port: int
    cluster_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the peer's base URL."""
        return f"http://127.0.0.1:{self.web_port}"

    def running(self) -> bool:
        """Return True while the process lives."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        """Stop the process (SIGKILL after ``grace`` seconds) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=grace)


class AlertmanagerCluster:
    """N peers of one cluster; ``async with`` starts them and waits until they are ready."""

    def __init__(self, workdir: Path, peers: int = 2, config: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.config = config or SINK_CONFIG
        self.peers = [
            Peer(i, free_port(), free_port(), workdir / f"alertmanager-{i}.log")
            for i in range(peers)
        ]
        self._http: aiohttp.ClientSession | None = None

    @property
    def urls(self) -> list[str]:
        """Return every peer's base URL."""
        return [p.url for p in self.peers]

    @property
    def http(self) -> aiohttp.ClientSession:
        """Return the cluster's HTTP session."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._http

    def start_peer(self, peer: Peer) -> None:
        """Start one peer's process (again, after a kill: same ports, same storage)."""
        binary = alertmanager_binary()
        if binary is None:
            raise RuntimeError("prometheus-alertmanager is not installed (make system-deps)")
        config = self.workdir / "alertmanager.yml"
        if not config.exists():
            config.write_text(yaml.safe_dump(self.config))
        storage = self.workdir / f"alertmanager-data-{peer.index}"
        storage.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{peer.web_port}",
            f"--cluster.listen-address=127.0.0.1:{peer.cluster_port}",
            f"--cluster.advertise-address=127.0.0.1:{peer.cluster_port}",
            # Gossip at test speed: a silence reaches the other peer within a second or two.
            "--cluster.gossip-interval=100ms",
            "--cluster.pushpull-interval=2s",
        ]
        for other in self.peers:
            if other is not peer:
                argv.append(f"--cluster.peer=127.0.0.1:{other.cluster_port}")
        with peer.log_path.open("ab") as log:
            peer.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    async def wait_ready(self, peers: list[Peer] | None = None, within: float = 60.0) -> None:
        """Wait until every given peer (default all) says its cluster is ready."""
        deadline = time.monotonic() + within
        for peer in peers or self.peers:
            while True:
                if not peer.running():
                    raise RuntimeError(f"alertmanager {peer.index} exited; see {peer.log_path}")
                try:
                    async with self.http.get(peer.url + "/api/v2/status") as r:
                        if r.status == 200:
                            body = await r.json()
                            if body.get("cluster", {}).get("status") == "ready":
                                break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"alertmanager {peer.index} not ready within {within}s")
                await asyncio.sleep(0.2)

    async def __aenter__(self) -> AlertmanagerCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for peer in self.peers:
                self.start_peer(peer)
            await self.wait_ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every peer and close the HTTP session."""
        try:
            for peer in reversed(self.peers):
                peer.stop()
        finally:
            if self._http is not None:
                await self._http.close()
                self._http = None

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Post alerts (API v2 postableAlerts) to every live peer, as Prometheus does."""
        for peer in self.peers:
            if peer.running():
                async with self.http.post(peer.url + "/api/v2/alerts", json=alerts) as r:
                    if r.status != 200:
                        raise RuntimeError(f"peer {peer.index}: {r.status} {await r.text()}")

    async def silence(self, matchers: dict[str, str], seconds: float = 3600.0) -> str:
        """Silence alerts matching ``matchers`` (equality) on the first live peer; return its id."""
        now = datetime.now(UTC)
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in matchers.items()
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(seconds=seconds)).isoformat(),
            "createdBy": "sysinner-exporter tests",
            "comment": "silenced on purpose",
        }
        peer = next(p for p in self.peers if p.running())
        async with self.http.post(peer.url + "/api/v2/silences", json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"silence: {r.status} {await r.text()}")
            return str((await r.json())["silenceID"])

    async def active(self, peer: Peer, matchers: dict[str, str]) -> list[dict[str, Any]]:
        """Return the active, unsilenced alerts ``peer`` serves that match ``matchers``."""
        params = [("active", "true"), ("silenced", "false"), ("inhibited", "false")]
        params += [("filter", f'{k}="{v}"') for k, v in matchers.items()]
        async with self.http.get(peer.url + "/api/v2/alerts", params=params) as r:
            found: list[dict[str, Any]] = await r.json()
            return found


def postable(
    labels: dict[str, str], *, starts_at: datetime | None = None, resolved: bool = False
) -> dict[str, Any]:
    """Return one API v2 postable alert; ``resolved`` sets its end in the past."""
    now = datetime.now(UTC)
    start = starts_at or now - timedelta(minutes=1)
    end = now - timedelta(seconds=1) if resolved else now + timedelta(hours=1)
    return {
        "labels": labels,
        "annotations": {"summary": "sick"},
        "startsAt": start.isoformat(),
        "endsAt": end.isoformat(),
        "generatorURL": "http://127.0.0.1/graph",
    }
