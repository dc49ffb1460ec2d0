"""Values in the engine's JSON: timestamps, arrays read entry by entry, mounts, cgroup paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.drivers import docker_json as dj
from tests.support.engine_data import load

# -- timestamps --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T00:10:31.101265858Z", datetime(2026, 11, 29, 0, 10, 31, 101265, UTC)),
        ("2026-11-29T00:10:31.1Z", datetime(2026, 11, 29, 0, 10, 31, 100000, UTC)),
        ("2026-11-29T00:10:31Z", datetime(2026, 11, 29, 0, 10, 31, tzinfo=UTC)),
        ("2026-11-29T05:40:31.000000001+05:30", datetime(2026, 11, 29, 0, 10, 31, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    assert dj.parse_timestamp(text) == pytest.approx(expected.timestamp(), abs=1e-6)


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000000Z", "", None, "not a time"]
)
def test_parse_timestamp_zero_and_garbage(text: str | None) -> None:
    assert dj.parse_timestamp(text) == 0.0


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(items=st.lists(_JSON_VALUES, max_size=6), indent=st.sampled_from([None, 0, 2]))
def test_iter_json_array_yields_what_json_loads_would(items: list[Any], indent: int | None) -> None:
    text = json.dumps(items, indent=indent) + "\n"
    assert list(dj.iter_json_array(text)) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{}", "[1 2]", "[1,", "[1,]", "[,1]", "[1]]", "[1] x", "x["])
def test_iter_json_array_refuses_what_is_not_one_array(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json's own messages vary by case
        list(dj.iter_json_array(text))


def test_binds_come_from_the_mounts_however_they_were_created() -> None:
    raw = load("inspect_running.json")
    # Created with Mounts: HostConfig.Binds is empty, the top-level Mounts say it all.
    raw["HostConfig"]["Binds"] = None
    raw["Mounts"] = [
        {"Type": "bind", "Source": "/srv/a", "Destination": "/a", "RW": True},
        {"Type": "volume", "Source": "/var/lib/docker/volumes/v/_data", "Destination": "/v"},
    ]
    c = dj.container_from_inspect(raw)
    assert c.binds == ["/srv/a:/a"]
    assert c.mount_sources == ("/srv/a", "/var/lib/docker/volumes/v/_data")


@pytest.mark.parametrize(
    ("parent", "driver", "path"),
    [
        ("", "cgroupfs", "/docker/{id}"),
        ("/custom/parent/", "cgroupfs", "/custom/parent/{id}"),
        ("", "systemd", "/system.slice/docker-{id}.scope"),
        ("my-apps.slice", "systemd", "/my.slice/my-apps.slice/docker-{id}.scope"),
        ("-.slice", "systemd", "/docker-{id}.scope"),
    ],
)
def test_cgroup_path_is_where_the_engine_puts_the_container(
    parent: str, driver: str, path: str
) -> None:
    raw = load("inspect_running.json")
    raw["HostConfig"]["CgroupParent"] = parent
    c = dj.container_from_inspect(raw, cgroup_driver=driver)
    assert c.cgroup_path == path.format(id=raw["Id"])
