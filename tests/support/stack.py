"""The monitoring stack on loopback: the exporter, Debian's Prometheus and Alertmanager.

Each service runs as a child process on 127.0.0.1 with a free port, a
config and storage under a temp dir, and its log and config under
``artifacts/monitoring/<run>/`` (kept after the run for CI to show; one dir
per run so concurrent runs keep their own). :class:`Stack` stops every
process it started, by its own handle, in ``close()``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.engine import engine_answers
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import EXPORTER_BIN, Service
from tests.support.requirements import require
from tests.support.waiting import wait_until

ARTIFACTS = ROOT / "artifacts" / "monitoring"
#: Run dirs older than this are pruned when a new run starts.
KEEP_RUNS_SECONDS = 3600
JOB = "sysinner-exporter"


def new_run_dir() -> Path:
    """Return a fresh dir under ARTIFACTS for this run's logs; prune old runs' dirs."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in ARTIFACTS.iterdir():
        if old.is_dir() and now - old.stat().st_mtime > KEEP_RUNS_SECONDS:
            shutil.rmtree(old, ignore_errors=True)
    run = ARTIFACTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run.mkdir()
    return run


@dataclass
class Stack:
    """The exporter, Prometheus and Alertmanager, wired together on loopback."""

    workdir: Path
    logdir: Path
    token: str
    services: list[Service] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None

    def _service(self, name: str, argv: list[str], port: int, **kw: Any) -> Service:
        s = Service(name, argv, port, self.logdir / f"{name}.log", **kw)
        self.services.append(s)
        return s

    @property
    def http(self) -> aiohttp.ClientSession:
        """Return the stack's HTTP session."""
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.session

    async def _ready(self, service: Service, path: str, within: float) -> None:
        async def ok() -> bool:
            async with self.http.get(service.url + path) as r:
                return r.status == 200

        await wait_until(ok, within, f"{service.name} {path}", services=[service])

    # -- the exporter -------------------------------------------------------

    async def start_exporter(self, *extra: str) -> Service:
        """Start ``sysinner-exporter serve`` polling every second, its API on with the token."""
        port = free_port()
        state = self.workdir / "exporter-state"
        state.mkdir()
        exporter = self._service(
            "exporter",
            [
                str(EXPORTER_BIN),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--poll.interval",
                "1",
                "--state.dir",
                str(state),
                *extra,
                "serve",
            ],
            port,
            env={"EXPORTER_API_TOKEN": self.token, "EXPORTER_LOG_LEVEL": "debug"},
        )
        exporter.start()
        await self._ready(exporter, "/readyz", 30)
        return exporter

    # -- Alertmanager -------------------------------------------------------

    def alertmanager_config(self, webhook_url: str) -> dict[str, Any]:
        """Return alerts/alertmanager.yml pointed at ``webhook_url``, with test-speed timings."""
        config: dict[str, Any] = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
        token_file = self.workdir / "alertmanager.token"
        token_file.write_text(self.token)
        for receiver in config["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = webhook_url
                hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        config["route"].update(group_wait="1s", group_interval="1s")
        for route in config["route"]["routes"]:
            # Re-sends every few seconds: the test proves they restart nothing more.
            route.update(group_wait="1s", group_interval="1s", repeat_interval="3s")
        return config

    async def start_alertmanager(self, webhook_url: str) -> Service:
        """Start Debian's Alertmanager with the repository's route, clustering off."""
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        assert binary is not None
        port = free_port()
        config = self.workdir / "alertmanager.yml"
        config.write_text(yaml.safe_dump(self.alertmanager_config(webhook_url)))
        shutil.copy(config, self.logdir / "alertmanager.yml")
        am = self._service(
            "alertmanager",
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
            port,
        )
        am.start()
        await self._ready(am, "/-/ready", 30)
        return am

    # -- Prometheus ---------------------------------------------------------

    async def start_prometheus(
        self, exporter: Service, alertmanager: Service, rule_files: Sequence[Path]
    ) -> Service:
        """Start Debian's Prometheus: scrape the exporter every second, alert to Alertmanager."""
        port = free_port()
        config = self.workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(p) for p in rule_files],
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}
                        ]
                    },
                    "scrape_configs": [
                        {
                            "job_name": JOB,
                            "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}],
                        }
                    ],
                }
            )
        )
        shutil.copy(config, self.logdir / "prometheus.yml")
        prom = self._service(
            "prometheus",
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Firing alerts go to Alertmanager again this often (default 1m).
                "--rules.alert.resend-delay=2s",
                "--log.level=debug",
            ],
            port,
        )
        prom.start()
        await self._ready(prom, "/-/ready", 30)
        return prom

    async def probe_webhook(self, exporter: Service) -> tuple[int, str]:
        """POST an empty Alertmanager payload to the exporter's webhook; return (status, body)."""
        payload = {"version": "4", "status": "firing", "receiver": "probe", "alerts": []}
        async with self.http.post(
            exporter.url + "/api/v1/alerts",
            json=payload,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as r:
            return r.status, await r.text()

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Return the instant vector ``expr`` evaluates to now in Prometheus."""
        prom = next(s for s in self.services if s.name == "prometheus")
        async with self.http.get(prom.url + "/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def query_value(self, expr: str) -> float | None:
        """Return the single value of ``expr``, or None when it returns no series."""
        result = await self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr!r} returned {len(result)} series"
        return float(result[0]["value"][1])

    def tails(self) -> str:
        """Return the log tails of every service, for a failure report."""
        return "\n".join(f"----- {s.name} ({s.log_path}) -----\n{s.tail()}" for s in self.services)

    async def close(self) -> None:
        """Stop every service in reverse order and close the HTTP session."""
        try:
            for s in reversed(self.services):
                s.stop()
        finally:
            if self.session is not None:
                await self.session.close()


def require_stack() -> None:
    """Require Prometheus, promtool, Alertmanager and the engine (the test carries both marks)."""
    for binary in ("promtool", "prometheus"):
        require(
            shutil.which(binary) is not None, f"{binary} (Debian's prometheus)", needs="prometheus"
        )
    require(
        shutil.which("prometheus-alertmanager") is not None
        or shutil.which("alertmanager") is not None,
        "Debian's prometheus-alertmanager",
        needs="prometheus",
    )
    require(engine_answers(), "a Docker engine", needs="engine")
