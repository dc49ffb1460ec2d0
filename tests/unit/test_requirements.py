"""require() holds a test's markers and what it needs together, so make test-unit can trust them."""

from __future__ import annotations

import pytest

from tests.support.requirements import NEEDS, require


def test_a_test_without_the_marker_fails_even_when_the_thing_is_there() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"not marked @pytest\.mark\.engine"):
        require(True, "a Docker engine", needs="engine")


def test_a_test_with_the_marker_passes_when_the_thing_is_there(
    request: pytest.FixtureRequest,
) -> None:
    request.applymarker(pytest.mark.compose)
    require(True, "docker-compose", needs="compose")


def test_a_marked_test_whose_thing_is_missing_fails_under_ci_or_skips(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    request.applymarker(pytest.mark.tools)
    monkeypatch.setattr("tests.support.requirements.IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true forbids skipping"):
        require(False, "wrk", needs="tools")
    monkeypatch.setattr("tests.support.requirements.IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="wrk is missing"):
        require(False, "wrk", needs="tools")


def test_an_unknown_need_is_refused() -> None:
    with pytest.raises(pytest.fail.Exception, match="not one of"):
        require(True, "a unicorn", needs="unicorn")


def test_every_need_is_a_registered_marker(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert set(NEEDS) <= registered


def test_the_engine_fixture_fails_a_test_not_marked_engine(request: pytest.FixtureRequest) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"not marked @pytest\.mark\.engine"):
        request.getfixturevalue("engine")
