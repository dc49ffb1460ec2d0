"""The wiring (exporter.wiring) and the entry point that runs it: token, state, policy, API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from exporter.api.keys import DEPLOYER, MOUNT_POLICY, REMEDIATION
from exporter.config import Settings
from exporter.confinement import Forbidden
from exporter.errors import ConfigError
from exporter.models import MountBind
from exporter.state import StateStore
from exporter.testing import FakeDriver
from exporter.wiring import read_api_token, wire
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.waiting import wait_for


def test_token_file_wins_and_is_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    settings = Settings(api_token="from-env", api_token_file=token_file)
    assert read_api_token(settings) == "from-the-file"


def test_token_from_env_and_none(tmp_path: Path) -> None:
    assert read_api_token(Settings(api_token="from-env")) == "from-env"
    assert read_api_token(Settings(api_token="  ")) is None
    assert read_api_token(Settings()) is None


def test_empty_token_file_is_a_config_error(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match=r"--api\.token-file: .* is empty"):
        read_api_token(Settings(api_token_file=token_file))


def test_the_token_is_read_once_and_the_api_parts_follow_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(" from-the-file \n")
    settings = Settings(
        api_token="from-env",
        api_token_file=token_file,
        state_dir=tmp_path / "state",
        pod_base_dir=tmp_path / "pods",
        stats_source="docker",
    )
    wired = wire(settings, driver=FakeDriver(), poll_in_background=False)
    assert wired.api_token == "from-the-file"
    assert "from-the-file" not in repr(wired)
    assert wired.remediation is not None
    assert wired.remediation.store.path == tmp_path / "state" / StateStore.FILENAME
    assert wired.deployer is not None
    # One policy for the API and replica deploys: one lock over every create.
    assert wired.deployer.mount_policy is wired.mount_policy
    assert wired.app[MOUNT_POLICY] is wired.mount_policy
    assert wired.app[DEPLOYER] is wired.deployer
    assert wired.app[REMEDIATION] is wired.remediation


@pytest.mark.parametrize("token", [None, "", "  "])
def test_without_a_token_the_wiring_builds_no_api_parts_and_no_state_dir(
    tmp_path: Path, token: str | None
) -> None:
    settings = Settings(api_token=token, state_dir=tmp_path / "state", stats_source="docker")
    wired = wire(settings, driver=FakeDriver(), poll_in_background=False)
    assert wired.api_token is None
    assert (wired.remediation, wired.deployer) == (None, None)
    assert REMEDIATION not in wired.app
    assert DEPLOYER not in wired.app
    assert not (tmp_path / "state").exists()


def test_the_wired_mount_policy_protects_the_state_file_and_the_token_file(
    tmp_path: Path,
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "token").write_text("t\n")
    settings = Settings(
        api_token_file=secrets_dir / "token",
        api_mount_prefixes=[tmp_path],
        state_dir=tmp_path / "state",
        pod_base_dir=tmp_path / "pods",
        host_prefix=tmp_path / "innerstack",
        stats_source="docker",
    )
    policy = wire(settings, driver=FakeDriver(), poll_in_background=False).mount_policy
    assert policy.check(MountBind(host_path=str(tmp_path / "data"), container_path="/data"))
    state_file = StateStore.file_in(tmp_path / "state")
    for source, exposed in ((tmp_path / "state", state_file), (secrets_dir, secrets_dir / "token")):
        with pytest.raises(Forbidden, match=f"it would expose {exposed}"):
            policy.check(MountBind(host_path=str(source), container_path="/data"))


@dataclass
class Served:
    """A ``serve`` child process: where it listens, and what it printed once stopped."""

    base: str
    output: bytes = b""


@contextlib.asynccontextmanager
async def serving(env: dict[str, str]) -> AsyncIterator[Served]:
    """Run the real entry point's ``serve`` until /healthz answers; stop it with SIGINT after."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "serve",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    served = Served(f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as session:

            async def listening() -> bool:
                assert proc.returncode is None, "exporter exited"
                try:
                    async with session.get(f"{served.base}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(listening, 20, "the exporter to listen")
        yield served
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        served.output = await proc.stdout.read() if proc.stdout else b""


async def test_serve_wires_the_api_and_its_state(tmp_path: Path) -> None:
    """Run the real entry point (no engine needed: it answers 503) and call the API."""
    token_file = tmp_path / "token"
    token_file.write_text("wired-token\n")
    env = {
        **os.environ,
        # Nothing listens there: the API must say the engine is unreachable.
        "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
        "EXPORTER_API_TOKEN_FILE": str(token_file),
        "EXPORTER_STATE_DIR": str(tmp_path / "state"),
        "EXPORTER_POD_BASE_DIR": str(tmp_path / "pods"),
        "EXPORTER_STATS_SOURCE": "docker",
        "NO_PROXY": "127.0.0.1",
    }
    auth = {"Authorization": "Bearer wired-token"}
    async with serving(env) as served, aiohttp.ClientSession() as session:
        base = served.base
        async with session.get(f"{base}/api/v1/ping") as resp:
            assert resp.status == 401
        async with session.get(f"{base}/api/v1/ping", headers=auth) as resp:
            assert resp.status == 503
            assert "cannot connect" in (await resp.json())["detail"]
        async with session.get(f"{base}/api/v1/replicas", headers=auth) as resp:
            assert (resp.status, await resp.json()) == (200, [])
        async with session.get(f"{base}/api/v1/remediation/history", headers=auth) as resp:
            assert (resp.status, await resp.json()) == (200, [])
        async with session.get(f"{base}/metrics") as resp:
            text = await resp.text()
            assert "sysinner_exporter_remediation_quarantined 0.0" in text
        assert (tmp_path / "state" / "state.sqlite3").is_file()
    assert b"lifecycle API on" in served.output, served.output.decode(errors="replace")[-2000:]


async def test_serve_without_a_token_touches_no_state_dir(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("EXPORTER_API_TOKEN", "EXPORTER_API_TOKEN_FILE")
    }
    env.update(
        DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock",
        EXPORTER_STATE_DIR=str(tmp_path / "state"),
        EXPORTER_STATS_SOURCE="docker",
    )
    async with serving(env) as served, aiohttp.ClientSession() as session:
        async with session.get(f"{served.base}/api/v1/info") as resp:
            assert resp.status == 403
            assert "EXPORTER_API_TOKEN" in (await resp.json())["detail"]
        assert not (tmp_path / "state").exists()
