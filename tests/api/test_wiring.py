"""The entry point wires the API: token from file or env, state dir, deployer, remediation."""

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

from exporter.__main__ import read_api_token
from exporter.config import Settings
from exporter.errors import ConfigError
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
