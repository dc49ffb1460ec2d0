from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.naming import (
    DEFAULT_PATTERN,
    NamingScheme,
    ParsedName,
    container_name,
    is_valid_container_name,
    parse_container_name,
)

HEX = "0123456789abcdef"
app_ids = st.text(alphabet=HEX, min_size=8, max_size=16)
replica_ids = st.integers(min_value=0, max_value=0xFFFF)
# The seed's ContainerNameValid, verbatim: an independent oracle for the default scheme.
SEED_VALID = re.compile(r"^app-[a-f0-9]{8,16}-[0-9a-f]{4}$")


@given(app_ids, replica_ids)
def test_name_round_trips(app: str, replica: int) -> None:
    name = container_name(app, replica)
    assert name == f"app-{app}-{replica:04x}"
    assert is_valid_container_name(name)
    assert parse_container_name(name) == ParsedName(app, replica)


@given(st.text(max_size=40))
def test_default_scheme_agrees_with_the_seed_regex(name: str) -> None:
    # "$" in the seed regex also matches before a final "\n"; the seed never
    # produces such names, so the stricter fullmatch is the intended meaning.
    expected = SEED_VALID.search(name) is not None and not name.endswith("\n")
    assert is_valid_container_name(name) is expected
    assert (parse_container_name(name) is not None) is expected


@given(app_ids, replica_ids, st.sampled_from(["x", " ", "\n", "-", "0", "/"]))
def test_garbage_before_or_after_never_parses(app: str, replica: int, junk: str) -> None:
    name = container_name(app, replica)
    assert parse_container_name(junk + name) is None
    assert parse_container_name(name + junk) is None
    assert not is_valid_container_name(name + junk)


@pytest.mark.parametrize(
    "name",
    [
        "app-abcdef12-0001\n",
        "app-ABCDEF12-0001",
        "app-abcdef12-000A",
        "app-abcdef1-0001",  # app id 7 chars
        "app-abcdef01234567890-0001",  # app id 17 chars
        "app-abcdef12-001",  # replica 3 digits
        "app-abcdef12-00001",  # replica 5 digits
        "app-abcdefgh-0001",  # not hex
        "App-abcdef12-0001",
        "xapp-abcdef12-0001",
        "app-abcdef12-0001x",
        "app_abcdef12_0001",
        "app-abcdef12",
        "",
    ],
)
def test_invalid_names_do_not_parse(name: str) -> None:
    assert parse_container_name(name) is None
    assert not is_valid_container_name(name)


@pytest.mark.parametrize(
    "app",
    ["ABCDEF12", "abcdef1", "abcdef0123456789a", "abcdefgz", "abc-def12", "", "abcdef12\n"],
)
def test_bad_app_id_is_named(app: str) -> None:
    with pytest.raises(ValueError, match=r"^app_id"):
        container_name(app, 1)


@pytest.mark.parametrize("replica", [-1, 0x10000, 1 << 40])
def test_bad_replica_id_is_named(replica: int) -> None:
    with pytest.raises(ValueError, match=r"^replica_id"):
        container_name("abcdef12", replica)


@pytest.mark.parametrize("replica", [True, 1.0, "1", None])
def test_replica_id_must_be_an_int(replica: object) -> None:
    with pytest.raises(ValueError, match=r"^replica_id"):
        container_name("abcdef12", replica)  # type: ignore[arg-type]


I8K = NamingScheme(
    pattern=r"i8k_(?P<app>[a-z0-9]+)_(?P<replica>[0-9]+)",
    template="i8k_{app}_{replica}",
    replica_base=10,
)


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20), replica_ids
)
def test_custom_decimal_scheme_round_trips(app: str, replica: int) -> None:
    name = I8K.format(app, replica)
    assert name == f"i8k_{app}_{replica}"
    assert I8K.is_valid(name)
    assert I8K.parse(name) == (app, replica)


def test_custom_scheme_reads_decimal_not_hex() -> None:
    assert I8K.parse("i8k_web_10") == ("web", 10)
    assert I8K.parse("i8k_web_0a") is None
    assert I8K.parse("app-abcdef12-0001") is None
    # The default scheme knows nothing of the custom one, and the other way round.
    assert parse_container_name("i8k_web_10") is None


def test_custom_scheme_names_the_bad_part() -> None:
    with pytest.raises(ValueError, match=r"^app_id"):
        I8K.format("Web", 1)
    with pytest.raises(ValueError, match=r"^replica_id"):
        I8K.format("web", -1)


@pytest.mark.parametrize(
    "pattern",
    [
        r"app-([a-f0-9]{8,16})-([0-9a-f]{4})",  # the seed's, without names
        r"app-(?P<app>[a-f0-9]+)-[0-9a-f]{4}",
        r"app-[a-f0-9]+-(?P<replica>[0-9a-f]{4})",
    ],
)
def test_pattern_without_named_groups_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="named group"):
        NamingScheme(pattern=pattern)


def test_broken_pattern_and_base_are_refused() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        NamingScheme(pattern="app-(?P<app>[a-f")
    with pytest.raises(ValueError, match="replica_base"):
        NamingScheme(replica_base=8)


def test_default_scheme_is_the_seeds() -> None:
    assert NamingScheme().pattern == DEFAULT_PATTERN
    assert NamingScheme().parse("app-abc123def456-0001") == ("abc123def456", 1)
    assert NamingScheme().parse("app-abc123def456-ffff") == ("abc123def456", 0xFFFF)
