"""Command-line flags: Prometheus-style names, over the environment, before or after the command."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from exporter.__main__ import build_parser, load_settings, main
from exporter.config import Settings, deprecated_variables, flag_name
from exporter.errors import ConfigError


def _settings(argv: list[str]) -> tuple[str | None, Settings]:
    args = build_parser().parse_args(argv)
    return args.command, load_settings(args)


def test_a_boolean_flag_does_not_swallow_the_command() -> None:
    command, settings = _settings(["--collect.all", "once"])
    assert command == "once"
    assert settings.collect_all is True


def test_flags_work_after_the_command_and_negate() -> None:
    command, settings = _settings(["once", "--no-collect.processes", "--poll.interval", "2.5"])
    assert command == "once"
    assert settings.collect_processes is False
    assert settings.poll_interval == 2.5


def test_an_absent_flag_leaves_the_environment_in_charge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSINNER_EXPORTER_POLL_INTERVAL", "7")
    monkeypatch.setenv("SYSINNER_EXPORTER_COLLECT_ALL", "true")
    _, from_env = _settings(["serve"])
    assert from_env.poll_interval == 7
    assert from_env.collect_all is True
    _, from_flag = _settings(["serve", "--poll.interval", "3", "--no-collect.all"])
    assert from_flag.poll_interval == 3
    assert from_flag.collect_all is False


def test_comma_separated_label_allow_list() -> None:
    _, settings = _settings(["--collect.labels", "team, com.example/tier"])
    assert settings.collect_labels == ["team", "com.example/tier"]


@pytest.mark.parametrize("raw", ["team,com.example/tier", '["team", "com.example/tier"]'])
def test_label_allow_list_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("EXPORTER_COLLECT_LABELS", raw)
    _, settings = _settings(["serve"])
    assert settings.collect_labels == ["team", "com.example/tier"]


WEB_TIMEOUTS = pytest.mark.parametrize(
    ("field", "flag", "env", "default"),
    [
        ("web_read_timeout", "--web.read-timeout", "SYSINNER_EXPORTER_WEB_READ_TIMEOUT", 10.0),
        ("web_write_timeout", "--web.write-timeout", "SYSINNER_EXPORTER_WEB_WRITE_TIMEOUT", 60.0),
    ],
)


@WEB_TIMEOUTS
def test_web_timeouts_from_flag_environment_and_default(
    monkeypatch: pytest.MonkeyPatch, field: str, flag: str, env: str, default: float
) -> None:
    assert getattr(_settings(["serve"])[1], field) == default
    monkeypatch.setenv(env, "2.5")
    assert getattr(_settings(["serve"])[1], field) == 2.5
    assert getattr(_settings(["serve", flag, "0.25"])[1], field) == 0.25


@WEB_TIMEOUTS
@pytest.mark.parametrize("raw", ["0", "-1", "3601", "soon", "inf", "nan"])
def test_web_timeouts_must_be_a_positive_number_of_seconds(
    field: str, flag: str, env: str, default: float, raw: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{flag} / {env}")):
        _settings(["serve", flag, raw])


@pytest.mark.parametrize(
    ("keys", "first", "second"),
    [
        ("com.example/tier,com.example.tier", "com.example/tier", "com.example.tier"),
        ("a-b,x,a_b", "a-b", "a_b"),
    ],
)
def test_label_keys_that_become_one_label_name_are_refused(
    keys: str, first: str, second: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(["--collect.labels", keys])
    message = str(caught.value)
    assert "--collect.labels" in message
    assert repr(first) in message
    assert repr(second) in message


def test_a_label_key_given_twice_is_one_label() -> None:
    _, settings = _settings(["--collect.labels", "team,tier,team"])
    assert settings.collect_labels == ["team", "tier"]


def test_the_old_prefix_is_still_read_below_the_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("EXPORTER_", "SYSINNER_EXPORTER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EXPORTER_POLL_INTERVAL", "7")
    monkeypatch.setenv("EXPORTER_LOG_LEVEL", "debug")
    monkeypatch.setenv("SYSINNER_EXPORTER_LOG_LEVEL", "error")
    _, settings = _settings(["serve"])
    assert settings.poll_interval == 7
    assert settings.log_level == "ERROR", "the new name wins over the old one"
    assert deprecated_variables() == [
        ("EXPORTER_LOG_LEVEL", "SYSINNER_EXPORTER_LOG_LEVEL"),
        ("EXPORTER_POLL_INTERVAL", "SYSINNER_EXPORTER_POLL_INTERVAL"),
    ]


def test_serve_logs_one_deprecation_line_per_old_variable(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith(("EXPORTER_", "SYSINNER_EXPORTER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EXPORTER_POLL_INTERVAL", "7")
    monkeypatch.setenv("DOCKER_HOST", "ftp://nowhere")  # stops right after the log is set up
    assert main(["once"]) == 2
    lines = [line for line in capfd.readouterr().err.splitlines() if "deprecated" in line]
    assert lines == [
        lines[0].split(" level=")[0] + " level=warn logger=exporter "
        'msg="EXPORTER_POLL_INTERVAL is deprecated: it is still read, but rename it '
        'SYSINNER_EXPORTER_POLL_INTERVAL"'
    ]


@pytest.mark.parametrize(("given", "level"), [("warn", "WARNING"), ("WARNING", "WARNING"),
                                              ("debug", "DEBUG"), ("Error", "ERROR")])  # fmt: skip
def test_log_level_takes_warn_as_the_toolkit_does(given: str, level: str) -> None:
    assert _settings(["--log.level", given])[1].log_level == level


def test_log_level_names_the_accepted_values() -> None:
    with pytest.raises(ConfigError, match="is not one of debug, info, warn, error"):
        _settings(["--log.level", "loud"])


@pytest.mark.parametrize(("given", "fmt"), [("logfmt", "logfmt"), ("plain", "logfmt"),
                                            ("json", "json")])  # fmt: skip
def test_log_format_is_logfmt_or_json_and_plain_is_logfmt(given: str, fmt: str) -> None:
    assert _settings(["--log.format", given])[1].log_format.value == fmt


def test_listen_address_repeats_and_splits_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--web.listen-address", "127.0.0.1:1", "serve", "--web.listen-address", "[::1]:2"]
    # Flags after the command replace those before it, as every other flag does.
    assert _settings(argv)[1].listen_addresses() == [("::1", 2)]
    argv = ["serve", "--web.listen-address", "127.0.0.1:1", "--web.listen-address", "[::1]:2"]
    assert _settings(argv)[1].listen_addresses() == [("127.0.0.1", 1), ("::1", 2)]
    monkeypatch.setenv("SYSINNER_EXPORTER_WEB_LISTEN_ADDRESS", "127.0.0.1:3, 127.0.0.1:4")
    assert _settings(["serve"])[1].web_listen_address == ["127.0.0.1:3", "127.0.0.1:4"]
    with pytest.raises(ConfigError, match=re.escape("'127.0.0.1:x' is not host:port")):
        _settings(["serve", "--web.listen-address", "127.0.0.1:5", "--web.listen-address",
                   "127.0.0.1:x"])  # fmt: skip


def test_web_config_file_is_the_toolkits_flag() -> None:
    assert flag_name("web_config_file") == "--web.config.file"
    assert _settings(["serve", "--web.config.file", "/etc/web.yml"])[1].web_config_file == Path(
        "/etc/web.yml"
    )


def test_collect_disable_takes_groups_and_refuses_an_unknown_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, settings = _settings(["--collect.disable", "network, oom,network"])
    assert settings.collect_disable == ["network", "oom"]
    monkeypatch.setenv("EXPORTER_COLLECT_DISABLE", "processes")
    _, settings = _settings([])
    assert settings.collect_disable == ["processes"]
    with pytest.raises(ConfigError) as caught:
        _settings(["--collect.disable", "cpu,disk"])
    message = str(caught.value)
    assert "--collect.disable" in message
    assert "'disk'" in message
    assert "memory" in message  # the groups there are, named


def test_collect_series_labels_from_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _, settings = _settings([])
    assert settings.collect_series_labels == []  # the default stays: info only
    _, settings = _settings(["--collect.series-labels", "*"])
    assert settings.collect_series_labels == ["*"]
    monkeypatch.setenv("EXPORTER_COLLECT_SERIES_LABELS", "team,tier")
    _, settings = _settings([])
    assert settings.collect_series_labels == ["team", "tier"]
