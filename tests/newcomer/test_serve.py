"""`serve`, `once` and `check` as a newcomer meets them: real processes on the real engine."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.newcomer.support import (
    EXPORTER_BIN,
    Exporter,
    clean_environment,
    get,
    parse_logfmt,
    wait_answer,
)
from tests.support.engine import ContainerFactory, engine_answers
from tests.support.ports import free_port
from tests.support.requirements import require

pytestmark = pytest.mark.engine

StartExporter = Callable[..., Exporter]


@pytest.fixture(autouse=True)
def _engine() -> None:
    require(engine_answers(), "a Docker engine", needs="engine")


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another process's socket listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXPORTER_BIN), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean_environment(), **(env or {})},
    )


def test_a_port_in_use_is_one_line_and_exit_1_before_anything_claims_to_serve(
    held_port: int,
) -> None:
    free = free_port()
    result = run(
        "serve",
        f"--web.listen-address=127.0.0.1:{free}",
        f"--web.listen-address=127.0.0.1:{held_port}",
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    record = parse_logfmt(lines[0])
    assert record["level"] == "error"
    assert record["msg"].startswith(
        f"cannot listen on 127.0.0.1:{held_port}: address already in use; "
        "another process listens there"
    )
    assert f"ss -ltnp 'sport = :{held_port}'" in record["msg"]
    # The address bound before the one in use was let go.
    with socket.socket() as s:
        s.bind(("127.0.0.1", free))


def test_two_listen_addresses_serve_the_same_exporter(exporters: StartExporter) -> None:
    first, second = free_port(), free_port()
    exporter = exporters(
        f"--web.listen-address=127.0.0.1:{first}", f"--web.listen-address=127.0.0.1:{second}"
    )
    urls = exporter.serving()
    assert urls == [
        f"http://127.0.0.1:{first}/metrics",
        f"http://127.0.0.1:{second}/metrics",
    ]
    for url in urls:
        answer = get(url)
        assert answer.status == 200
        assert b"sysinner_exporter_build_info" in answer.body


def test_the_landing_page_links_what_the_exporter_serves(exporters: StartExporter) -> None:
    port = free_port()
    exporter = exporters(f"--web.listen-address=127.0.0.1:{port}", "--web.telemetry-path=/m")
    exporter.serving()
    page = get(f"http://127.0.0.1:{port}/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    links = re.findall(r'<a href="([^"]+)">', page.body.decode())
    assert links == ["/m", "/healthz", "/readyz", "/api/v1/openapi.json"]
    for link in links[:3]:
        assert get(f"http://127.0.0.1:{port}{link}").status in (200, 503), link
    # The API document is behind the API's own switch: off without a token, and it says so.
    assert get(f"http://127.0.0.1:{port}{links[3]}").status == 403


def test_every_log_line_is_logfmt_and_a_sigterm_is_said(exporters: StartExporter) -> None:
    port = free_port()
    exporter = exporters(f"--web.listen-address=127.0.0.1:{port}", "--log.level=debug")
    exporter.serving()
    get(f"http://127.0.0.1:{port}/metrics")
    assert exporter.stop() == 0
    records = exporter.records()  # every line parses, or parse_logfmt fails the test
    assert len(records) >= 4
    for record in records:
        assert list(record)[:4] == ["ts", "level", "logger", "msg"], record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"]), record
        assert record["level"] in ("debug", "info", "warn", "error"), record
    messages = [r["msg"] for r in records]
    assert messages[-2:] == ["SIGTERM received: stopping", "stopped"]
    assert any(m.startswith("stats source: ") for m in messages)


def test_warn_level_and_json_format(exporters: StartExporter) -> None:
    port = free_port()
    exporter = exporters(
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        "--log.format=json",
        env={"EXPORTER_POLL_INTERVAL": "5"},  # deprecated: one warning line
    )
    # Nothing at info, so no "serving on": the port answering says it serves.
    wait_answer(f"http://127.0.0.1:{port}/healthz", 30, lambda a: a.status == 200)
    assert exporter.stop() == 0
    records = [json.loads(line) for line in exporter.lines()]
    assert [r["msg"] for r in records] == [
        "EXPORTER_POLL_INTERVAL is deprecated: it is still read, but rename it "
        "SYSINNER_EXPORTER_POLL_INTERVAL"
    ]
    assert records[0]["level"] == "warn"


def test_once_with_the_engine_down_prints_nothing_and_exits_1(tmp_path: Path) -> None:
    result = run("once", env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert result.returncode == 1
    assert result.stdout == ""
    errors = [parse_logfmt(line) for line in result.stderr.splitlines()]
    errors = [r for r in errors if r["level"] == "error"]
    assert len(errors) == 1, result.stderr
    assert errors[0]["msg"].startswith("engine unreachable, nothing printed: cannot connect")


def test_once_with_the_engine_up_prints_the_exposition_and_exits_0() -> None:
    result = run("once")
    assert result.returncode == 0, result.stderr
    assert "sysinner_exporter_up 1.0" in result.stdout


def test_check_beside_the_running_exporter_finds_its_port_fine(exporters: StartExporter) -> None:
    port = free_port()
    exporters(f"--web.listen-address=127.0.0.1:{port}").serving()
    result = run("check", f"--web.listen-address=127.0.0.1:{port}")
    assert result.returncode == 0, result.stdout
    assert (
        f"listen port   ok    127.0.0.1:{port} is served by a running sysinner-exporter"
        in result.stdout
    )


@pytest.fixture
def private_proc(tmp_path: Path) -> Path:
    """A /proc of its own, as in a container started without --pid=host.

    The cgroup files look readable, but no container's pid is under it.
    """
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_bytes(Path("/proc/self/cgroup").read_bytes())
    return proc


async def test_check_says_what_serve_logs_when_proc_is_not_the_hosts(
    exporters: StartExporter, private_proc: Path, make_container: ContainerFactory
) -> None:
    await make_container()
    proc = private_proc
    port = free_port()
    argv = [f"--proc.root={proc}", f"--web.listen-address=127.0.0.1:{port}"]
    result = await asyncio.to_thread(run, "check", *argv)
    assert result.returncode == 0, result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("stats read"))
    running = int(re.search(r"(\d+) running container", line)[1])  # type: ignore[index]
    assert running >= 1
    assert line == (
        f"stats read    warn  {running} running container{'s' * (running > 1)}: "
        f"{running} from the engine"
    ), result.stdout
    assert "hint: no container's pid is under the proc root" in result.stdout
    assert result.stdout.rstrip().endswith("warning")

    exporter = exporters(*argv, "--poll.interval=1")
    warning = await asyncio.to_thread(exporter.wait_log, lambda r: r["level"] == "warn", 30)
    assert warning["msg"].endswith(
        "which is not the host's /proc (a container needs pid: host and the host's /proc "
        "mounted): their stats come from the engine instead, slower"
    )
    assert f"under {proc}," in warning["msg"]
    body = (await asyncio.to_thread(get, f"http://127.0.0.1:{port}/metrics")).body.decode()
    assert 'sysinner_exporter_stats_source{source="cgroup+docker"} 1.0' in body


def test_check_and_serve_say_the_same_about_an_empty_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    argv = [f"--api.token-file={token}", f"--web.listen-address=127.0.0.1:{free_port()}"]
    check = run("check", *argv)
    assert check.returncode == 1
    expected = f"--api.token-file: {token} is empty"
    assert f"api           FAIL  {expected}\n" in check.stdout, check.stdout
    serve = run("serve", *argv)
    assert serve.returncode == 2
    errors = [parse_logfmt(x) for x in serve.stderr.splitlines()]
    assert [r["msg"] for r in errors if r["level"] == "error"] == [expected]
    assert not any(r["msg"].startswith("serving on") for r in errors)
