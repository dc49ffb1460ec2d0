"""Something real a test needs (an engine, promtool, ...): its marker, and how it fails when absent.

Every test that needs something real carries the marker naming it, so
``make test-unit`` can leave it out. :func:`require` holds the two together:
it fails at once when the test calling it (directly or through a fixture)
lacks the marker, whether the thing is there or not, so a mis-marked test
fails in ``make test-unit`` and ``make test`` alike.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: The markers of things a test may need, and what each covers (pyproject.toml registers them).
NEEDS = {
    "engine": "a real Docker engine (or dockerd to start a private one)",
    "registry": "Debian's docker-registry on loopback",
    "image": "the sysinner-exporter:test image that `make test-image` builds",
    "promtool": "promtool from Debian's prometheus package",
    "prometheus": "Debian's prometheus or alertmanager servers, or amtool",
    "compose": "docker-compose (Debian's docker-compose v1)",
    "tools": "a host tool or privilege outside Python: wrk, unshare as root",
}

_current: pytest.Item | None = None


def set_current_test(item: pytest.Item | None) -> None:
    """Note the test being run (conftest's pytest_runtest_protocol hook calls this)."""
    global _current
    _current = item


def require(condition: bool, what: str, *, needs: str) -> None:
    """Fail under CI, skip elsewhere, when ``what`` is missing; fail if the test lacks ``needs``.

    ``needs`` is the marker (one of :data:`NEEDS`) the calling test must carry.
    """
    if needs not in NEEDS:
        pytest.fail(f"require(needs={needs!r}): not one of {sorted(NEEDS)}")
    if _current is not None and _current.get_closest_marker(needs) is None:
        pytest.fail(
            f"{_current.nodeid} needs {what} but is not marked @pytest.mark.{needs}:"
            " mark it, so `make test-unit` leaves it out"
        )
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI=true forbids skipping")
    pytest.skip(f"{what} is missing (run `make engine` / `make system-deps`)")
