"""`check` tells whether the engine sees the pod base where the exporter does (issue 12, item 16).

An exporter in a container whose pod base is not bind-mounted at the same
path writes pod dirs the engine never sees. Played here with a private
mount namespace (``unshare -m``) and a tmpfs over the pod base's parent:
this process then sees another tree than the engine, as such a container
would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.requirements import require

pytestmark = pytest.mark.engine


def _check(tmp_path: Path, pod_base: Path, *wrap: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXPORTER_API_TOKEN": "check-test-token"}
    argv = [
        sys.executable,
        "-m",
        "exporter",
        "check",
        "--web.listen-address=127.0.0.1:0",
        f"--pod.base-dir={pod_base}",
        f"--state.dir={tmp_path / 'state'}",
    ]
    return subprocess.run(
        [*wrap, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_check_passes_when_the_engine_sees_the_pod_base(engine: None, tmp_path: Path) -> None:
    pod_base = tmp_path / "pods"
    result = _check(tmp_path, pod_base)
    assert f"host paths    ok    the engine sees {pod_base} as we do" in result.stdout
    assert result.returncode == 0, result.stdout
    # The probe dir is gone, the pod base stays (serve would make it anyway).
    assert os.listdir(pod_base) == []


@pytest.mark.tools
def test_check_fails_when_the_pod_base_is_another_tree_than_the_hosts(
    engine: None, tmp_path: Path
) -> None:
    require(
        shutil.which("unshare") is not None and os.geteuid() == 0,
        "unshare -m as root",
        needs="tools",
    )
    view = tmp_path / "view"
    view.mkdir()
    pod_base = view / "pods"
    script = 'mount -t tmpfs none "$0" && exec "$@"'
    result = _check(tmp_path, pod_base, "unshare", "-m", "sh", "-c", script, str(view))
    assert "host paths    FAIL  the engine does not see" in result.stdout, result
    assert f"{pod_base} as this process does" in result.stdout
    assert "hint: in a container, bind-mount the pod base" in result.stdout
    assert result.returncode == 1
    # Nothing was left on the host's side, and no probe container on the engine.
    assert os.listdir(view) == []
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", "name=sysinner-exporter-probe", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout.strip() == ""


def test_check_fails_for_a_prefix_that_does_not_exist(engine: None, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EXPORTER_API_TOKEN": "check-test-token",
        "EXPORTER_API_MOUNT_PREFIXES": str(tmp_path / "absent"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "check",
            "--web.listen-address=127.0.0.1:0",
            f"--pod.base-dir={tmp_path / 'pods'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "host paths    FAIL  cannot make a probe dir" in result.stdout, result
    assert result.returncode == 1
