"""The command line: help that names every flag, and `check` with its exit codes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.__main__ import COMMANDS, build_parser, main
from exporter.check import (
    Finding,
    check_containers,
    check_engine,
    check_port,
    check_settings,
    check_stats_source,
    render,
)
from exporter.config import Settings, env_name, flag_name, shown_default
from exporter.errors import ConfigError, EngineUnreachableError
from exporter.models import ContainerState
from exporter.testing import FakeDriver
from exporter.wiring import build_driver, choose_stats_source
from tests.support.paths import ROOT
from tests.support.ports import free_port


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test with no (SYSINNER_)EXPORTER_* variable and the default engine address."""
    for name in list(os.environ):
        if name.startswith(("EXPORTER_", "SYSINNER_EXPORTER_", "DOCKER_")):
            monkeypatch.delenv(name)


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point DOCKER_HOST at a socket path that does not exist; return the host."""
    host = f"unix://{tmp_path}/nonexistent.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


@pytest.fixture
def listening() -> Iterator[int]:
    """Hold a port on 127.0.0.1 open and listening; yield it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def help_of(*argv: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


# -- help ---------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_names_every_flag_its_variable_and_default(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(*([command] if command else []), capsys=capsys)
    # argparse wraps long lines; compare with whitespace collapsed.
    flat = " ".join(text.split())
    for field in Settings.model_fields:
        assert flag_name(field) in flat, field
        assert f"[{env_name(field)}; default: {shown_default(field) or 'none'}]" in flat, field


@pytest.mark.parametrize(
    ("field", "shown"),
    [
        ("poll_interval", "10.0"),
        ("log_format", "logfmt"),
        ("web_listen_address", "0.0.0.0:8733"),
        ("collect_labels", ""),
        ("api_token", ""),
        ("collect_all", "False"),
    ],
)
def test_defaults_are_shown_as_a_person_would_type_them(field: str, shown: str) -> None:
    assert shown_default(field) == shown


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    flat = " ".join(help_of(capsys=capsys).split())
    for name, text in COMMANDS.items():
        assert f"{name} {' '.join(text.split())}" in flat, name
    assert "DOCKER_HOST" in flat


def test_every_subcommand_has_a_description() -> None:
    parser = build_parser()
    for name in COMMANDS:
        sub = parser.parse_args([name])
        assert sub.command == name
    assert "check" in COMMANDS


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("sysinner-exporter 0.")


# -- bad settings: exit 2, the flag and its variable named -----------------


def test_bad_flag_value_exits_2_naming_flag_and_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "--poll.interval=abc"]) == 2
    err = capsys.readouterr().err
    assert "--poll.interval / SYSINNER_EXPORTER_POLL_INTERVAL" in err
    assert "valid number" in err


def test_bad_variable_value_exits_2_naming_flag_and_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXPORTER_WEB_LISTEN_ADDRESS", "nowhere")
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    # The deprecated variable is still read; the message names the current one.
    assert "--web.listen-address / SYSINNER_EXPORTER_WEB_LISTEN_ADDRESS" in err
    assert "'nowhere' is not host:port" in err


def test_bad_docker_host_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "ftp://engine")
    assert main(["check"]) == 2
    assert "DOCKER_HOST: unsupported scheme in 'ftp://engine'" in capsys.readouterr().err


# -- check: exit codes on the real command line ---------------------------


def test_check_without_engine_exits_1_and_says_why(
    no_engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    assert main(["check", f"--web.listen-address=127.0.0.1:{port}"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("engine        FAIL  ")
    assert (
        f"cannot connect to Docker Engine via {no_engine}: "
        "[Errno 2] No such file or directory" in lines[0]
    )
    assert "hint: no socket at that path" in lines[1]
    assert f"listen port   ok    127.0.0.1:{port} is free" in out
    assert lines[-1] == "1 problem"


def test_check_reports_a_port_in_use(
    no_engine: str, listening: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", f"--web.listen-address=127.0.0.1:{listening}"]) == 1
    out = capsys.readouterr().out
    assert f"listen port   FAIL  cannot bind 127.0.0.1:{listening}: Address already in use" in out
    assert "hint: another process listens there" in out
    assert out.splitlines()[-1] == "2 problems"


def test_check_reports_a_forced_stats_source_that_cannot_read(
    no_engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "check",
        "--stats.source=cgroup",
        f"--cgroup.root={tmp_path}/nowhere",
        f"--web.listen-address=127.0.0.1:{free_port()}",
    ]
    assert main(argv) == 1
    out = capsys.readouterr().out
    expected = (
        "stats source  FAIL  --stats.source=cgroup, but /proc/self/cgroup "
        f"or {tmp_path}/nowhere is not readable"
    )
    assert expected in out
    assert "hint: check --proc.root / --cgroup.root" in out


@pytest.mark.engine
def test_check_on_the_real_engine_exits_0(engine: None, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    argv = ["check", f"--web.listen-address=127.0.0.1:{port}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    settings = Settings(web_listen_address=f"127.0.0.1:{port}")
    driver = build_driver(settings)
    try:
        expected_source, why = choose_stats_source(settings, driver)
    finally:
        asyncio.run(driver.close())
    assert out.splitlines()[0].startswith("engine        ok    Docker Engine ")
    assert ", API 1." in out.splitlines()[0]
    assert f"stats source  ok    {expected_source.name} ({why})\n" in out
    assert "stats read    " in out
    assert f"listen port   ok    127.0.0.1:{port} is free" in out
    assert "settings      ok    valid; set by flag or environment: --web.listen-address=" in out
    assert out.endswith("all good\n")


def test_console_script_exit_code_without_engine(no_engine: str) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check", f"--web.listen-address=127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "DOCKER_HOST": no_engine},
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "engine        FAIL" in result.stdout


# -- the checks one by one ----------------------------------------------


async def test_check_engine_names_version_and_api() -> None:
    finding = await check_engine(FakeDriver(), "fake://")
    assert finding == Finding("engine", True, "Docker Engine 0, API 1.41, at fake://")


async def test_check_engine_gives_up_after_its_timeout() -> None:
    driver = FakeDriver()
    # A ping that would answer in an hour: a check that waited for it instead of
    # giving up would meet this test's own deadline, which only stops a hang.
    driver.delays["ping"] = 3600
    async with asyncio.timeout(60):
        finding = await check_engine(driver, "fake://", within=0.2)
    assert not finding.ok
    assert finding.detail == "no answer from fake:// within 0.2s"


async def test_check_engine_hints_at_the_socket_group_on_permission_denied() -> None:
    driver = FakeDriver()
    cause = PermissionError(13, "Permission denied")
    error = EngineUnreachableError("cannot connect to Docker Engine via unix:///s: denied")
    error.__cause__ = cause
    driver.fail("ping", error)
    finding = await check_engine(driver, "unix:///s")
    assert not finding.ok
    assert "--group-add $(stat -c %g /var/run/docker.sock)" in finding.hint


def test_check_stats_source_reports_a_source_that_cannot_be_built() -> None:
    def broken() -> FakeDriver:
        raise ConfigError("--stats.source=cgroup: /nowhere/self/cgroup is unreadable")

    finding, source = check_stats_source(broken)  # type: ignore[arg-type]
    assert source is None
    assert not finding.ok
    assert finding.detail == "--stats.source=cgroup: /nowhere/self/cgroup is unreadable"


def test_check_port_refuses_an_address_of_no_interface() -> None:
    finding = check_port("192.0.2.1", free_port())  # TEST-NET-1: never local
    assert not finding.ok
    assert "no interface of this host has that address" in finding.hint


def test_check_settings_masks_secrets() -> None:
    finding = check_settings(Settings(api_token="s3cret", poll_interval=2))
    assert finding.ok
    assert "s3cret" not in finding.detail
    assert "--api.token=**********" in finding.detail
    assert "--poll.interval=2.0" in finding.detail
    assert check_settings(Settings()).detail == "all defaults"


def test_render_aligns_and_counts() -> None:
    text = render(
        [
            Finding("engine", False, "down", "start it"),
            Finding("listen port", True, "free", "never shown when ok"),
        ]
    )
    assert text == (
        "engine       FAIL  down\n"
        "                   hint: start it\n"
        "listen port  ok    free\n"
        "1 problem\n"
    )


async def test_check_counts_the_unmanaged_containers_it_leaves_out() -> None:
    driver = FakeDriver()
    driver.add("app-0123abcd-0001")
    driver.add("postgres")
    driver.add("redis", state=ContainerState.STOPPED)
    finding = await check_containers(Settings(), driver)
    assert finding == Finding(
        "containers",
        True,
        "1 managed tracked; 2 unmanaged left out (--collect.all includes them)",
    )
    assert await check_containers(Settings(collect_all=True), driver) == Finding(
        "containers", True, "3 tracked"
    )
