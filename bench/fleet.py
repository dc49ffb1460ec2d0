"""The fleet benchmark: one alert, one restart, across a fleet (issue 16 item 4).

On loopback only: N SIMULATED hosts x M containers (:mod:`bench.simfleet`,
one process) plus the real engine, one ``sysinner-exporter serve`` per host,
Debian's ``prometheus`` scraping every exporter through file_sd and
evaluating the repository's rules (alerts/rules.yml, the memory alert's
``for:`` shortened to benchmark speed), and a 2-peer ``prometheus-alertmanager``
cluster. Run in pull mode (each exporter polls the cluster) and in push mode
(one receiver fanning out to every exporter's webhook, as the README used to
advise). One container per host is made sick (its working set 95% of its
limit: simulated on the simulated hosts, a real /dev/shm fill on the real
engine) and one more whose alert is silenced.

Figures: restarts per sick container, lifecycle calls on everything else,
not-found answers per alert, alert firing -> restarted p50/p95, Prometheus
head series against what the exporters expose, scrape duration p99, bytes
per series, exporter CPU per container per poll; faults in pull mode (one
Alertmanager peer killed, Alertmanager down, one exporter SIGSTOPped).

Mode ``agent`` is pull mode with the metrics going through per-host Prometheus
agents (``--enable-feature=agent``) remote-writing into a central Prometheus
(``--web.enable-remote-write-receiver``); it adds the remote-write figures.

Run: ``python -m bench.fleet --hosts 50 --containers 100`` (``make fleet``);
``--hosts 5 --containers 20`` is the quick version ``make test`` runs.
Logs and configs are kept under ``artifacts/fleet/<run>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.amcluster import SINK_CONFIG, AlertmanagerCluster, free_port
from exporter.snapshot import ErrorKind

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = ROOT / ".venv" / "bin" / "sysinner-exporter"
ARTIFACTS = ROOT / "artifacts" / "fleet"
RULES = ROOT / "alerts" / "rules.yml"
MEMORY_ALERT = "SysinnerContainerMemoryNearLimit"
#: Every exporter manages this run's real app and the simulated names (apps 10xxxxxx), so a
#: pushed alert for another host answers not-found, as in a real fleet; never another
#: user's or another run's containers on the shared real engine.
REAL_NAMING_PATTERN = r"app-(?P<app>{app}|10[0-9a-f]{{6}})-(?P<replica>[0-9a-f]{{4}})"
REAL_MEMORY_LIMIT = 32 * 1024 * 1024
#: Fills 29 MiB of /dev/shm (shmem counts in the working set: > 90% of the limit) at its
#: first start only, so the restart cures it.
SICK_ONCE_CMD = (
    "[ -e /sick-once ] || { touch /sick-once; head -c 29m /dev/zero > /dev/shm/hog; }; "
    "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"
)
HEALTHY_CMD = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"
#: Prometheus adds these series per target (up, scrape_duration_seconds, ...).
SYNTHETIC_SERIES_PER_TARGET = 5


@dataclass
class Options:
    """One benchmark run's size and pace."""

    hosts: int = 5
    containers: int = 20
    mode: str = "pull"
    poll_interval: float = 2.0
    scrape_interval: float = 2.0
    pull_interval: float = 3.0
    faults: bool = True
    real_engine: bool = True
    timeout: float = 180.0
    #: How long exporter CPU is measured over, seconds.
    cpu_window: float = 30.0
    #: Processes serving the simulated hosts (0: the simulator's default).
    sim_shards: int = 0


@dataclass
class Proc:
    """One child process, stopped by its own handle."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def url(self) -> str:
        """Return its base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGCONT (it may be stopped), SIGTERM, then SIGKILL after 10 s; reap it."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Host:
    """One host: its engine socket (None: the real engine), its exporter, its containers."""

    index: int
    socket: str | None
    names: list[str]
    exporter: Proc | None = None


@dataclass
class Result:
    """The figures of one run."""

    mode: str
    hosts: int
    containers: int
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Start a child with its output in ``log``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Proc(name, proc, log)


async def until(
    check: Callable[[], Awaitable[Any]], within: float, what: str, every: float = 0.5
) -> Any:
    """Await ``check()`` until truthy and return it; TimeoutError after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            value = await check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(every)


async def docker(*args: str, check: bool = True) -> str:
    """Run the docker CLI on the real engine; return its stdout."""
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {args[0]}: {err.decode(errors='replace').strip()}")
    return out.decode()


def percentile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def parse_time(text: str) -> float:
    """Return unix seconds of an RFC 3339 time as Alertmanager or Docker writes it."""
    head, _, frac = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head.split("+")[0] + "+00:00").timestamp()
    digits = "".join(ch for ch in frac if ch.isdigit())[:6]
    return base + (float("0." + digits) if digits else 0.0)


def fast_rules(path: Path, for_seconds: float) -> None:
    """Write the repository's rules with the memory alert's ``for:`` at benchmark speed."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["interval"] = f"{for_seconds:g}s"
        for rule in group["rules"]:
            if rule.get("alert") == MEMORY_ALERT:
                rule["for"] = f"{for_seconds:g}s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def push_config(exporters: list[Proc], token_file: Path) -> dict[str, Any]:
    """Return the fan-out receiver: every alert to every exporter's webhook."""
    hooks = [
        {
            "url": f"{e.url}/api/v1/alerts",
            "send_resolved": False,
            "http_config": {
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
            },
            "max_alerts": 0,
        }
        for e in exporters
    ]
    return {
        "route": {
            "receiver": "sink",
            "group_wait": "1s",
            "group_interval": "1s",
            "routes": [
                {
                    "receiver": "sysinner-exporter",
                    "matchers": ['action="restart"'],
                    "group_by": ["name", "app", "replica", "alertname", "instance"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                }
            ],
        },
        "receivers": [{"name": "sink"}, {"name": "sysinner-exporter", "webhook_configs": hooks}],
    }


class Fleet:
    """Everything one run starts; ``close()`` stops it all, by handle."""

    def __init__(self, opts: Options, run_dir: Path) -> None:
        self.opts = opts
        self.dir = run_dir
        self.token = secrets.token_hex(16)
        self.procs: list[Proc] = []
        self.hosts: list[Host] = []
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.sim: Proc | None = None
        self.prometheus: Proc | None = None
        self.agents: list[Proc] = []
        self.am: AlertmanagerCluster | None = None
        self.real_containers: list[str] = []
        self.real_app = "1f" + secrets.token_hex(3)
        self.real_first_start = 0.0

    # -- starting -----------------------------------------------------------

    async def start_sim(self) -> None:
        """Start the simulated fleet and learn its hosts."""
        port = free_port()
        self.sim = spawn(
            "simfleet",
            [
                sys.executable,
                "-m",
                "bench.simfleet",
                "--hosts",
                str(self.opts.hosts),
                "--containers",
                str(self.opts.containers),
                "--dir",
                str(self.dir / "sockets"),
                "--control-port",
                str(port),
                *(["--shards", str(self.opts.sim_shards)] if self.opts.sim_shards else []),
            ],
            self.dir / "simfleet.log",
        )
        self.sim.port = port
        self.procs.append(self.sim)

        async def hosts() -> list[dict[str, Any]]:
            async with self.http.get(self.sim.url + "/hosts") as r:  # type: ignore[union-attr]
                return list(await r.json())

        for h in await until(hosts, 120, "the simulated fleet"):
            self.hosts.append(Host(h["host"], h["socket"], h["names"]))

    async def start_real(self) -> None:
        """Create the real engine's containers (one sick at first start) through the CLI."""
        names = [f"app-{self.real_app}-{r:04x}" for r in range(3)]
        for r, name in enumerate(names):
            cmd = SICK_ONCE_CMD if r == 0 else HEALTHY_CMD
            await docker(
                "run",
                "-d",
                "--name",
                name,
                "--memory",
                str(REAL_MEMORY_LIMIT),
                "--memory-swap",
                str(REAL_MEMORY_LIMIT),
                "--label",
                "io.sysinner.bench=fleet",
                "local/busybox:latest",
                "/bin/sh",
                "-c",
                cmd,
            )
            self.real_containers.append(name)
        # The sick one is sick from its first start: its alert may fire before the others'.
        self.real_first_start = await self.real_started(names[0])
        self.hosts.append(Host(0, None, names))

    async def start_exporters(self, peers: list[str]) -> None:
        """Start one exporter per host, in the run's mode."""
        for host in self.hosts:
            port = free_port()
            state = self.dir / f"state-{host.index}"
            state.mkdir()
            argv = [
                str(EXPORTER),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--poll.interval",
                str(self.opts.poll_interval),
                "--state.dir",
                str(state),
                "--naming.pattern",
                # Every host manages the same names, as in a real fleet (only the real
                # engine has this run's real app).
                REAL_NAMING_PATTERN.format(app=self.real_app),
                "--remediation.cooldown-seconds",
                "3600",
            ]
            env = {"EXPORTER_LOG_LEVEL": "info"}
            if host.socket is not None:
                env["DOCKER_HOST"] = f"unix://{host.socket}"
                argv += ["--stats.source", "docker", "--no-collect.processes"]
            if self.opts.mode != "push":
                argv += [
                    "--alertmanager.url",
                    ",".join(peers),
                    "--alertmanager.poll-interval",
                    str(self.opts.pull_interval),
                ]
            else:
                env["EXPORTER_API_TOKEN"] = self.token
            proc = spawn(
                f"exporter-{host.index}",
                [*argv, "serve"],
                self.dir / f"exporter-{host.index}.log",
                env,
            )
            proc.port = port
            host.exporter = proc
            self.procs.append(proc)
        for host in self.hosts:
            exporter = host.exporter
            assert exporter is not None

            async def up(e: Proc = exporter) -> bool:
                if e.proc.poll() is not None:
                    raise RuntimeError(f"{e.name} exited; see {e.log}")
                async with self.http.get(e.url + "/metrics") as r:
                    return r.status == 200 and "sysinner_exporter_up 1.0" in await r.text()

            await until(up, 120, f"{exporter.name} polling its engine")

    async def start_prometheus(self, peers: list[str]) -> None:
        """Start Prometheus with file_sd over every exporter and the repository's rules."""
        port = free_port()
        rules = self.dir / "rules.yml"
        fast_rules(rules, max(1.0, self.opts.scrape_interval))
        targets = self.dir / "targets.json"
        targets.write_text(
            json.dumps(
                [
                    {
                        "targets": [
                            f"127.0.0.1:{h.exporter.port}" for h in self.hosts if h.exporter
                        ],
                        "labels": {"fleet": "bench"},
                    }
                ]
            )
        )
        interval = f"{self.opts.scrape_interval:g}s"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(rules)],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [p.removeprefix("http://") for p in peers]}]}
                ]
            },
            "scrape_configs": [
                {
                    "job_name": "sysinner-exporter",
                    "scrape_timeout": interval,
                    "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "5s"}],
                }
            ],
        }
        agents = self.opts.mode == "agent"
        if agents:
            # The central one scrapes nothing: per-host agents remote-write into it.
            del config["scrape_configs"]
        path = self.dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        binary = shutil.which("prometheus") or "prometheus"
        self.prometheus = spawn(
            "prometheus",
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--rules.alert.resend-delay=1s",
                *(["--web.enable-remote-write-receiver"] if agents else []),
            ],
            self.dir / "prometheus.log",
        )
        self.prometheus.port = port
        self.procs.append(self.prometheus)

        async def ready() -> bool:
            async with self.http.get(self.prometheus.url + "/-/ready") as r:  # type: ignore[union-attr]
                return r.status == 200

        await until(ready, 60, "prometheus ready")
        if agents:
            await self.start_agents(interval)

    async def start_agents(self, interval: str) -> None:
        """Start one Prometheus agent per host, remote-writing into the central one."""
        assert self.prometheus is not None
        binary = shutil.which("prometheus") or "prometheus"
        for host in self.hosts:
            assert host.exporter is not None
            port = free_port()
            config = {
                "global": {"scrape_interval": interval},
                "scrape_configs": [
                    {
                        "job_name": "sysinner-exporter",
                        "scrape_timeout": interval,
                        "static_configs": [
                            {
                                "targets": [f"127.0.0.1:{host.exporter.port}"],
                                "labels": {"fleet": "bench"},
                            }
                        ],
                    }
                ],
                "remote_write": [{"url": self.prometheus.url + "/api/v1/write"}],
            }
            path = self.dir / f"agent-{host.index}.yml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            agent = spawn(
                f"agent-{host.index}",
                [
                    binary,
                    "--enable-feature=agent",
                    f"--config.file={path}",
                    f"--storage.agent.path={self.dir / f'agent-data-{host.index}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                self.dir / f"agent-{host.index}.log",
            )
            agent.port = port
            self.procs.append(agent)
            self.agents.append(agent)
        for agent in self.agents:

            async def ready(a: Proc = agent) -> bool:
                if a.proc.poll() is not None:
                    raise RuntimeError(f"{a.name} exited; see {a.log}")
                async with self.http.get(a.url + "/-/ready") as r:
                    return r.status == 200

            await until(ready, 120, f"{agent.name} ready")

    async def start(self) -> None:
        """Start the whole fleet in the run's mode."""
        await self.start_sim()
        if self.opts.real_engine:
            await self.start_real()
        # Push mode needs the exporters' URLs in the Alertmanager config: ports first.
        am_dir = self.dir / "alertmanager"
        am_dir.mkdir()
        self.am = AlertmanagerCluster(am_dir, peers=2)
        if self.opts.mode != "push":
            self.am.config = SINK_CONFIG
            await self.am.__aenter__()
            await self.start_exporters(self.am.urls)
        else:
            await self.start_exporters([])
            token_file = self.dir / "token"
            token_file.write_text(self.token)
            self.am.config = push_config([h.exporter for h in self.hosts if h.exporter], token_file)
            await self.am.__aenter__()
        await self.start_prometheus(self.am.urls)

    async def close(self) -> None:
        """Stop everything this run started and remove its real containers."""
        try:
            for p in reversed(self.procs):
                p.stop()
            if self.am is not None:
                await self.am.close()
            for name in self.real_containers:
                await docker("rm", "-f", name, check=False)
        finally:
            await self.http.close()

    # -- reading --------------------------------------------------------------

    async def sick(self, name: str) -> None:
        """Make a simulated container sick."""
        async with self.http.post(self.sim.url + "/sick", json={"name": name}) as r:  # type: ignore[union-attr]
            if r.status != 200:
                raise RuntimeError(f"sick {name}: {r.status} {await r.text()}")

    async def lifecycle(self) -> list[dict[str, Any]]:
        """Return the simulated fleet's lifecycle log."""
        async with self.http.get(self.sim.url + "/lifecycle") as r:  # type: ignore[union-attr]
            return list(await r.json())

    async def real_started(self, name: str) -> float:
        """Return when a real container last started, unix seconds."""
        return parse_time((await docker("inspect", "-f", "{{.State.StartedAt}}", name)).strip())

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Return the instant vector of ``expr``."""
        async with self.http.get(
            self.prometheus.url + "/api/v1/query",
            params={"query": expr},  # type: ignore[union-attr]
        ) as r:
            body = await r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{expr}: {body}")
        return list(body["data"]["result"])

    async def scalar(self, expr: str) -> float:
        """Return the single value of ``expr`` (nan when empty)."""
        found = await self.query(expr)
        return float(found[0]["value"][1]) if found else float("nan")

    async def am_alerts(self, peer: int = -1, **matchers: str) -> list[dict[str, Any]]:
        """Return active alerts of one live peer matching ``matchers``."""
        assert self.am is not None
        peers = [p for p in self.am.peers if p.running()]
        if not peers:
            return []
        return await self.am.active(peers[peer], {"alertname": MEMORY_ALERT, **matchers})

    async def exporter_metrics(self, host: Host) -> str:
        """Return one exporter's /metrics text."""
        assert host.exporter is not None
        async with self.http.get(host.exporter.url + "/metrics") as r:
            return await r.text()


def sample_value(text: str, name: str, labels: str = "") -> float:
    """Return a sample's value from exposition text (0 when absent)."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def samples_in(text: str) -> int:
    """Return how many samples an exposition holds."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


class Watch:
    """Records the first startsAt seen per sick container's alert, every half second."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.starts: dict[str, float] = {}
        self.fired_seen: dict[str, float] = {}

    async def run(self) -> None:
        """Poll Alertmanager until cancelled."""
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, RuntimeError):
                assert self.fleet.am is not None
                for peer in self.fleet.am.peers:
                    if not peer.running():
                        continue
                    for a in await self.fleet.am.active(peer, {"alertname": MEMORY_ALERT}):
                        name = a["labels"].get("name", "")
                        self.starts.setdefault(name, parse_time(a["startsAt"]))
                        self.fired_seen.setdefault(name, time.time())
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def watching(fleet: Fleet) -> AsyncIterator[Watch]:
    """Run a :class:`Watch` for the block."""
    watch = Watch(fleet)
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def restarts_of(log: list[dict[str, Any]]) -> dict[str, list[tuple[str, float]]]:
    """Return each container's lifecycle calls (op, at) from the simulated fleet's log."""
    by_name: dict[str, list[tuple[str, float]]] = {}
    for c in log:
        by_name.setdefault(c["name"], []).append((c["op"], float(c["at"])))
    return by_name


async def run(opts: Options, run_dir: Path) -> Result:
    """Run one mode of the benchmark; return its figures and any broken expectation."""
    result = Result(opts.mode, opts.hosts, opts.containers)
    fleet = Fleet(opts, run_dir)
    fig = result.figures
    try:
        t0 = time.monotonic()
        await fleet.start()
        fig["startup_seconds"] = round(time.monotonic() - t0, 1)
        sim_hosts = [h for h in fleet.hosts if h.socket is not None]
        real = [h for h in fleet.hosts if h.socket is None]
        # One sick container per simulated host, plus one more whose alert is silenced.
        sick = [h.names[1] for h in sim_hosts]
        silenced = sim_hosts[0].names[2]
        assert fleet.am is not None
        await fleet.am.silence({"name": silenced})
        async with watching(fleet) as watch:
            for name in [*sick, silenced]:
                await fleet.sick(name)
            real_sick = real[0].names[0] if real else None
            real_before = fleet.real_first_start
            expected = set(sick)

            async def all_restarted() -> bool:
                by = restarts_of(await fleet.lifecycle())
                return all(any(op == "start" for op, _ in by.get(n, [])) for n in expected)

            await until(all_restarted, opts.timeout, f"{len(expected)} sick containers restarted")
            real_after = 0.0
            if real_sick:

                async def real_restarted() -> float:
                    started = await fleet.real_started(real_sick)
                    return started if started > real_before + 0.5 else 0.0

                real_after = await until(real_restarted, opts.timeout, "the real sick container")
            # Let a few more polls and re-sends pass: nothing more may happen.
            await asyncio.sleep(3 * max(opts.pull_interval, opts.scrape_interval))
            log = await fleet.lifecycle()
        by = restarts_of(log)
        per_sick: Counter[tuple[int, int]] = Counter()
        for name in sick:
            ops = [op for op, _ in by.get(name, [])]
            per_sick[(ops.count("stop"), ops.count("start"))] += 1
        fig["sick_containers"] = len(sick) + (1 if real else 0)
        fig["sick_stopped_started_exactly_once"] = per_sick[(1, 1)] + (1 if real_after else 0)
        others = [c for c in log if c["name"] not in expected]
        fig["lifecycle_calls_on_others"] = len(others)
        fig["lifecycle_calls_on_silenced"] = len(by.get(silenced, []))
        if per_sick[(1, 1)] != len(sick):
            result.problems.append(f"sick containers' (stops, starts): {dict(per_sick)}")
        if others:
            result.problems.append(f"lifecycle calls on other containers: {others[:5]}")
        # Latency: the alert's startsAt (when Prometheus fired it) -> the container's start.
        latencies = []
        for name in sick:
            starts = [at for op, at in by.get(name, []) if op == "start"]
            if name in watch.starts and starts:
                latencies.append(starts[0] - watch.starts[name])
        if real_sick and real_sick in watch.starts:
            latencies.append(real_after - watch.starts[real_sick])
        fig["firing_to_restarted_p50_s"] = round(percentile(latencies, 0.5), 2)
        fig["firing_to_restarted_p95_s"] = round(percentile(latencies, 0.95), 2)
        fig["firing_to_restarted_max_s"] = round(max(latencies, default=float("nan")), 2)
        fig["latency_samples"] = len(latencies)
        # Not-found answers per alert, from every exporter's counter.
        texts = [await fleet.exporter_metrics(h) for h in fleet.hosts]
        not_here = sum(
            sample_value(t, "sysinner_exporter_remediation_not_here_total") for t in texts
        )
        alerts = len(sick) + (1 if real else 0)
        fig["not_found_answers_per_alert"] = round(not_here / alerts, 2)
        # A second delivery of an alert (the other Alertmanager peer's) answers duplicate.
        duplicates = sum(
            sample_value(
                t,
                "sysinner_exporter_remediation_actions_total",
                'action="restart",result="duplicate"',
            )
            for t in texts
        )
        fig["duplicate_answers_per_alert"] = round(duplicates / alerts, 2)
        fig["hosts_total"] = len(fleet.hosts)
        await prometheus_figures(fleet, texts, fig)
        await cpu_figures(fleet, fig)
        if fleet.agents:
            await remote_write_figures(fleet, fig, result)
        if opts.mode == "pull" and opts.faults:
            await pull_faults(fleet, fig, result)
    finally:
        await fleet.close()
    return result


async def prometheus_figures(fleet: Fleet, texts: list[str], fig: dict[str, Any]) -> None:
    """Head series against the exporters' samples, scrape p99, bytes per series."""
    exposed = sum(samples_in(t) for t in texts)
    targets = len(texts)
    # Compare at an instant when every target's last scrape held all its containers: a poll
    # whose engine answered late drops containers (~44 series each, 1% of a 100-container
    # host) from that one exposition while the head keeps them, which would compare a full
    # head with a moment of failed polls. A restart may end a series or two for good: allowed.
    short = "scrape_samples_scraped < 0.995 * max_over_time(scrape_samples_scraped[10m])"

    async def complete() -> bool:
        return not await fleet.query(short)

    try:
        await until(complete, 6 * fleet.opts.scrape_interval + 30, "every target complete")
        fig["head_compared_with_every_target_complete"] = True
    except TimeoutError:
        fig["head_compared_with_every_target_complete"] = False
    async with fleet.http.get(fleet.prometheus.url + "/metrics") as r:  # type: ignore[union-attr]
        own = await r.text()
    head = sample_value(own, "prometheus_tsdb_head_series")
    # The rules' series at the same instant (an alert may go pending for many containers).
    recorded = await fleet.scalar('count({__name__=~".+:.+"})')
    alert_series = await fleet.scalar('count({__name__=~"ALERTS|ALERTS_FOR_STATE"})')
    rules = (0.0 if math.isnan(recorded) else recorded) + (
        0.0 if math.isnan(alert_series) else alert_series
    )
    # What the targets exposed at their last scrape, as Prometheus counted it at this instant
    # (a /metrics read a moment apart may catch a poll that timed out).
    scraped = await fleet.scalar("sum(scrape_samples_scraped)")
    rss = sample_value(own, "process_resident_memory_bytes")
    if not math.isnan(scraped):
        exposed = int(scraped)
    expected = exposed + SYNTHETIC_SERIES_PER_TARGET * targets + rules
    fig["exporters_exposed_samples"] = exposed
    fig["prometheus_head_series"] = int(head)
    fig["head_vs_exposed_plus_synthetic_and_rules_pct"] = round(
        100 * (head - expected) / expected, 2
    )
    p99 = await fleet.query("quantile_over_time(0.99, scrape_duration_seconds[2m])")
    values = sorted(float(v["value"][1]) for v in p99)
    fig["scrape_duration_p99_s_median_target"] = (
        round(statistics.median(values), 4) if values else None
    )
    fig["scrape_duration_p99_s_worst_target"] = round(values[-1], 4) if values else None
    fig["exposition_bytes_per_series"] = round(
        sum(len(t.encode()) for t in texts) / max(1, sum(samples_in(t) for t in texts)), 1
    )
    fig["prometheus_rss_bytes_per_head_series"] = round(rss / head, 1) if head else None


async def remote_write_figures(fleet: Fleet, fig: dict[str, Any], result: Result) -> None:
    """Samples the agents sent, and failed or dropped (summed over every agent)."""
    totals: Counter[str] = Counter()
    for agent in fleet.agents:
        async with fleet.http.get(agent.url + "/metrics") as r:
            text = await r.text()
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0]
            for what in ("samples_total", "samples_failed_total", "samples_dropped_total"):
                if name == f"prometheus_remote_storage_{what}":
                    totals[what] += float(line.rsplit(" ", 1)[1])
    fig["remote_write_samples_sent"] = int(totals["samples_total"])
    fig["remote_write_samples_failed"] = int(totals["samples_failed_total"])
    fig["remote_write_samples_dropped"] = int(totals["samples_dropped_total"])
    if totals["samples_failed_total"] or totals["samples_dropped_total"]:
        result.problems.append(f"remote write lost samples: {dict(totals)}")
    if not totals["samples_total"]:
        result.problems.append("remote write sent nothing")


async def cpu_figures(fleet: Fleet, fig: dict[str, Any]) -> None:
    """Exporter CPU per container per poll over a steady window; the simulated engines' pace.

    The poll durations and poll errors of the simulated hosts' exporters over the same
    window say whether the simulator kept up: a poll whose inspects or stats come late
    drops containers from that exposition.
    """
    sims = [h for h in fleet.hosts if h.socket is not None]

    async def read() -> list[tuple[float, float, Counter[str], float]]:
        out = []
        for h in sims:
            t = await fleet.exporter_metrics(h)
            errors = Counter(
                {
                    kind.value: int(
                        sample_value(t, "sysinner_exporter_errors_total", f'kind="{kind}"')
                    )
                    for kind in ErrorKind
                }
            )
            out.append(
                (
                    sample_value(t, "process_cpu_seconds_total"),
                    sample_value(t, "sysinner_exporter_polls_total"),
                    errors,
                    sample_value(t, "sysinner_exporter_poll_duration_seconds"),
                )
            )
        return out

    before = await read()
    await asyncio.sleep(fleet.opts.cpu_window)
    after = await read()
    per = []
    for (c0, p0, _, _), (c1, p1, _, _) in zip(before, after, strict=True):
        if p1 > p0:
            per.append((c1 - c0) / (p1 - p0) / fleet.opts.containers)
    fig["exporter_cpu_ms_per_container_per_poll"] = (
        round(1000 * statistics.median(per), 3) if per else None
    )
    durations = [d for *_, d in before + after]
    fig["sim_exporter_poll_duration_s_median_max"] = (
        f"{statistics.median(durations):.2f} / {max(durations):.2f}" if durations else None
    )
    errors: Counter[str] = Counter()
    for (_, _, e0, _), (_, _, e1, _) in zip(before, after, strict=True):
        errors.update(e1 - e0)  # Counter subtraction keeps the kinds that grew
    fig["sim_exporter_poll_errors_in_cpu_window"] = errors.total()
    fig["sim_exporter_poll_errors_by_kind"] = (
        ", ".join(f"{kind} {n}" for kind, n in errors.most_common()) or "-"
    )


async def pull_faults(fleet: Fleet, fig: dict[str, Any], result: Result) -> None:
    """Pull mode's faults, each judged by lifecycle calls."""
    assert fleet.am is not None
    sims = [h for h in fleet.hosts if h.socket is not None]
    interval = fleet.opts.pull_interval
    wait = fleet.opts.timeout

    async def restarted_once(name: str) -> bool:
        ops = [c["op"] for c in await fleet.lifecycle() if c["name"] == name]
        return ops == ["stop", "start"]

    async def calls_on(name: str) -> int:
        return len([c for c in await fleet.lifecycle() if c["name"] == name])

    # 1. One Alertmanager peer killed: the other serves.
    fleet.am.peers[0].stop(signal.SIGKILL)
    name = sims[-1].names[5]
    await fleet.sick(name)
    try:
        await until(lambda: restarted_once(name), wait, "a restart with one peer killed")
        fig["fault_peer_killed"] = "1 restart"
    except TimeoutError:
        fig["fault_peer_killed"] = f"{await calls_on(name)} calls"
        result.problems.append("one peer killed: no single restart")
    # 2. Alertmanager down: nothing restarted, the exporters' engine polls go on.
    fleet.am.peers[1].stop(signal.SIGKILL)
    name = sims[-1].names[6]
    await fleet.sick(name)
    await asyncio.sleep(4 * interval + 2 * fleet.opts.scrape_interval)
    calls = await calls_on(name)
    text = await fleet.exporter_metrics(sims[-1])
    am_up = sample_value(text, "sysinner_exporter_alertmanager_up")
    engine_up = sample_value(text, "sysinner_exporter_up")
    fig["fault_am_down"] = f"{calls} calls, alertmanager_up={am_up:g}, exporter up={engine_up:g}"
    if calls or am_up or not engine_up:
        result.problems.append(f"alertmanager down: {fig['fault_am_down']}")
    # Back: the alert Prometheus re-sends is acted on once.
    for peer in fleet.am.peers:
        fleet.am.start_peer(peer)
    await fleet.am.wait_ready()
    try:
        await until(lambda: restarted_once(name), wait, "the restart once Alertmanager is back")
        fig["fault_am_back"] = "1 restart"
    except TimeoutError:
        fig["fault_am_back"] = f"{await calls_on(name)} calls"
        result.problems.append("alertmanager back: no single restart")
    # 3. One exporter SIGSTOPped: its host waits (its sick container is neither scraped nor
    # restarted), another host is served; SIGCONT: that container is restarted once.
    stopped, other = sims[0], sims[1 % len(sims)]
    a, b = stopped.names[7], other.names[8]
    assert stopped.exporter is not None
    stopped.exporter.proc.send_signal(signal.SIGSTOP)
    try:
        await fleet.sick(a)
        await fleet.sick(b)
        await until(lambda: restarted_once(b), wait, "the other host's restart")
        await asyncio.sleep(2 * interval)
        waited = await calls_on(a)
    finally:
        stopped.exporter.proc.send_signal(signal.SIGCONT)
    try:
        await until(lambda: restarted_once(a), wait, "the stopped host's restart after SIGCONT")
        back = "1 restart after SIGCONT"
    except TimeoutError:
        back = f"{await calls_on(a)} calls after SIGCONT"
        result.problems.append("sigstop: no single restart after SIGCONT")
    fig["fault_exporter_sigstop"] = (
        f"stopped host: {waited} calls while stopped, {back}; other host: 1 restart"
    )
    if waited:
        result.problems.append(f"sigstop: {waited} calls while the exporter was stopped")


def table(results: list[Result]) -> str:
    """Return the figures as a Markdown table, one column per run."""
    keys: list[str] = []
    for r in results:
        keys += [k for k in r.figures if k not in keys]
    head = (
        "| figure | "
        + " | ".join(f"{r.mode} ({r.hosts}x{r.containers}+real)" for r in results)
        + " |"
    )
    rows = [head, "|---|" + "---|" * len(results)]
    for k in keys:
        rows.append(f"| {k} | " + " | ".join(str(r.figures.get(k, "-")) for r in results) + " |")
    return "\n".join(rows)


async def _interruptible(work: Awaitable[Result]) -> Result:
    """Run ``work``; SIGTERM or SIGINT cancel it, so that everything started is stopped."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await task


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark in each asked mode; print the table; exit 1 on a broken expectation."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--modes", default="pull,push,agent")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--scrape-interval", type=float, default=5.0)
    parser.add_argument("--pull-interval", type=float, default=10.0)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--no-real-engine", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--cpu-window", type=float, default=60.0)
    parser.add_argument(
        "--sim-shards", type=int, default=0, help="simulator processes (default: its own)"
    )
    args = parser.parse_args(argv)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = []
    for mode in args.modes.split(","):
        opts = Options(
            hosts=args.hosts,
            containers=args.containers,
            mode=mode,
            poll_interval=args.poll_interval,
            scrape_interval=args.scrape_interval,
            pull_interval=args.pull_interval,
            faults=not args.no_faults,
            real_engine=not args.no_real_engine,
            timeout=args.timeout,
            cpu_window=args.cpu_window,
            sim_shards=args.sim_shards,
        )
        run_dir = ARTIFACTS / f"{stamp}-{os.getpid()}-{mode}"
        run_dir.mkdir(parents=True)
        result = asyncio.run(_interruptible(run(opts, run_dir)))
        results.append(result)
        print(json.dumps({"mode": mode, **result.figures, "problems": result.problems}), flush=True)
    print(table(results))
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
