"""The README's own commands, run as a newcomer runs them, on the real engine.

The commands are read from the README: each ``sh`` block that follows a
``<!-- newcomer-test: NAME -->`` marker. Nothing is copied here; only what
cannot be run twice on a shared machine is changed, and each change is
named where it is made: the container's name (unique), the published port
(a free one, on 127.0.0.1 only), the token file's path, and ``make image``
run in this checkout when compose runs from a copy of it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.newcomer.support import clean_environment, get, parse_logfmt, wait_answer
from tests.support.engine import ContainerFactory, engine_answers
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.requirements import require

pytestmark = pytest.mark.engine

README = ROOT / "README.md"
IMAGE = "sysinner-exporter:latest"
MARKED = re.compile(r"<!-- newcomer-test: ([\w-]+) -->\n```sh\n(.*?)```", re.S)


def readme_blocks() -> dict[str, str]:
    """Return the README's marked shell blocks by name."""
    return dict(MARKED.findall(README.read_text()))


def bash(
    script: str, *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 600
) -> str:
    """Run ``script`` with bash -euo pipefail; return its stdout, fail with its output."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean_environment(), **(env or {})},
    )
    assert result.returncode == 0, f"$ {script}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def image() -> str:
    """Build the image with the README's own command (cached layers make it quick)."""
    require(engine_answers(), "a Docker engine", needs="engine")
    bash(readme_blocks()["image"])
    assert docker("image", "inspect", IMAGE).returncode == 0
    return IMAGE


@pytest.fixture
def unique_name() -> Iterator[str]:
    """A container name of this test's own; the container is removed afterwards."""
    name = f"newcomer-exporter-{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        docker("rm", "--force", name)


def localised(block: str, name: str, port: int) -> str:
    """Return ``block`` with this test's container name and a free loopback port."""
    assert "--name sysinner-exporter " in block, block
    assert "-p 8733:8733" in block, block
    return (
        block.replace("--name sysinner-exporter ", f"--name {name} ")
        .replace("docker exec sysinner-exporter ", f"docker exec {name} ")
        .replace("-p 8733:8733", f"-p 127.0.0.1:{port}:8733")
    )


def test_the_readme_marks_every_command_this_test_runs() -> None:
    assert set(readme_blocks()) == {"make-run", "api", "image", "run-socket", "run-host", "compose"}
    for name, block in readme_blocks().items():
        assert "docker compose " not in block, f"{name}: Debian 12 has docker-compose (v1)"
        assert "sysinner-exporter:test" not in block, name


async def test_the_readmes_first_docker_run_exports_every_container_and_says_from_where(
    image: str, unique_name: str, make_container: ContainerFactory
) -> None:
    app = await make_container()
    port = free_port()
    bash(localised(readme_blocks()["run-socket"], unique_name, port))
    metrics = f"http://127.0.0.1:{port}/metrics"

    def exported(answer: object) -> bool:
        body = answer.body.decode()  # type: ignore[attr-defined]
        return "container_cpu_usage_seconds_total{" in body and f'name="{app.name}"' in body

    answer = wait_answer(metrics, 60, lambda a: a.status == 200 and exported(a))
    assert "sysinner_exporter_up 1.0" in answer.body.decode()
    # The socket only: no container's pid is visible, so every one is read from the engine,
    # and the log says exactly that (it used to say their stats were missing).
    logs = docker("logs", unique_name)
    records = [parse_logfmt(line) for line in (logs.stdout + logs.stderr).splitlines()]
    warnings = [r["msg"] for r in records if r["level"] == "warn"]
    assert any(m.endswith("their stats come from the engine instead, slower") for m in warnings), (
        records
    )
    assert not any("missing" in r["msg"] for r in records), records
    # check says what serve logs, beside it, on its port.
    check = docker("exec", unique_name, "sysinner-exporter", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "stats read    warn  " in check.stdout
    assert "from the engine" in check.stdout
    assert (
        "listen port   ok    0.0.0.0:8733 is served by a running sysinner-exporter" in check.stdout
    )


async def test_the_readmes_host_docker_run_reads_the_kernels_files(
    image: str, unique_name: str, make_container: ContainerFactory
) -> None:
    app = await make_container()
    port = free_port()
    out = bash(localised(readme_blocks()["run-host"], unique_name, port))
    assert "all good" in out.splitlines()[-1], out  # the README's `docker exec ... check`
    readyz = f"http://127.0.0.1:{port}/readyz"
    ready = wait_answer(readyz, 60, lambda a: a.status == 200)
    assert json.loads(ready.body)["stats_source"] == "cgroup+docker"
    body = get(f"http://127.0.0.1:{port}/metrics").body.decode()
    assert f'name="{app.name}"' in body


@pytest.mark.compose
def test_the_readmes_compose_lines_start_the_exporter_from_the_local_image(
    image: str, tmp_path: Path
) -> None:
    require(subprocess.run(["which", "docker-compose"], capture_output=True).returncode == 0,
            "docker-compose (Debian's package)", needs="compose")  # fmt: skip
    # A copy of the checkout: the block writes deploy/secrets/ where it runs.
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    copy = tmp_path / "checkout"
    for name in filter(None, files):
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            target.write_bytes((ROOT / name).read_bytes())
    block = readme_blocks()["compose"]
    assert block.splitlines()[0] == "make image"
    # make image builds in this checkout (the copy has no venv); the rest runs in the copy.
    block = block.replace("make image\n", f"make -C {ROOT} image\n", 1)
    port = free_port()
    project = f"newcomer{secrets.token_hex(4)}"
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "SYSINNER_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}",
    }
    try:
        bash(block, cwd=copy, env=env)
        answer = wait_answer(f"http://127.0.0.1:{port}/readyz", 90, lambda a: a.status == 200)
        assert json.loads(answer.body)["engine_up"] is True
        inspect = docker("inspect", f"{project}_exporter_1", "--format", "{{.Config.Image}}")
        assert inspect.stdout.strip() == IMAGE
        # The API is on, with the token file the block made.
        token = (copy / "deploy/secrets/api-token").read_text()
        ping = get(
            f"http://127.0.0.1:{port}/api/v1/ping", headers={"Authorization": f"Bearer {token}"}
        )
        assert ping.status == 200
    finally:
        subprocess.run(
            ["docker-compose", "down", "--volumes"],
            cwd=copy,
            env={**clean_environment(), **env, "DOCKER_GID": "0"},
            capture_output=True,
            timeout=120,
        )


def test_make_run_takes_flags_and_the_readmes_api_examples_answer(tmp_path: Path) -> None:
    require(engine_answers(), "a Docker engine", needs="engine")
    line = readme_blocks()["make-run"].strip()
    assert line.startswith('make run ARGS="')
    assert "--web.listen-address=127.0.0.1:9733" in line
    port = free_port()
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(16))
    extra = (
        f" --api.token-file={token} --state.dir={tmp_path / 'state'}"
        f" --pod.base-dir={tmp_path / 'pods'}"
    )
    # The README's line with a free port, and the token the API examples need.
    command = line.replace("127.0.0.1:9733", f"127.0.0.1:{port}")[:-1] + extra + '"'
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=clean_environment(),
            start_new_session=True,  # its own group: make and the exporter stop together
        )
    try:
        # make echoes its recipe first; the exporter's lines follow, logfmt.
        def serving(record: dict[str, str]) -> bool:
            return record.get("msg", "").startswith(f"serving on 127.0.0.1:{port}")

        deadline = time.monotonic() + 120
        while True:
            lines = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("ts=")]
            records = [parse_logfmt(x) for x in lines]
            if any(serving(r) for r in records):
                break
            assert make.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert any(r["level"] == "debug" for r in records), "--log.level=debug passed through"

        api = readme_blocks()["api"]
        assert "/etc/sysinner-exporter/token" in api
        assert "127.0.0.1:8733" in api
        api = api.replace("/etc/sysinner-exporter/token", str(token)).replace(
            "127.0.0.1:8733", f"127.0.0.1:{port}"
        )
        # -f: an HTTP error fails the block; each answer on a line of its own.
        out = bash('curl() { command curl -fsS "$@"; echo; }\n' + api, timeout=120)
        answers = [json.loads(x) for x in out.splitlines() if x.strip()]
        assert len(answers) == sum(1 for x in api.splitlines() if x.startswith("curl "))
        assert answers[1] == {"status": "ok"}
        assert answers[-1]["openapi"].startswith("3.1")
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)
