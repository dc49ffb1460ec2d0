"""exporter.safefs: walks that never follow a symlink, writes that never go through one.

Races are simulated by swapping a component between two steps of a walk
(a wrapper around ``os.open`` does the swap at the chosen call), so each
interleaving an attacker could hit is played deterministically.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter import safefs


@pytest.fixture
def root(tmp_path: Path) -> Path:
    made = tmp_path / "root"
    made.mkdir()
    return made


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A dir outside the root standing for the host's /etc, holding a marker file."""
    made = tmp_path / "host"
    made.mkdir()
    (made / "marker").write_text("host")
    os.chmod(made / "marker", 0o600)
    return made


@pytest.fixture
def root_fd(root: Path) -> Iterator[int]:
    fd = safefs.open_root(str(root))
    try:
        yield fd
    finally:
        os.close(fd)


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def test_components_of_a_path_strictly_under_the_root() -> None:
    assert safefs.components("/srv/pods", "/srv/pods/a/b") == ["a", "b"]
    assert safefs.components("/srv/pods/", "/srv/pods//a/./b/") == ["a", "b"]
    assert safefs.components("/srv/pods", "/srv/pods/a/../b") == ["b"]
    for bad in ("/srv/pods", "/srv/podsx/a", "/srv/pods/../etc", "relative", "/srv/pods/\0"):
        with pytest.raises(ValueError, match=r"not an absolute path|not under|itself"):
            safefs.components("/srv/pods", bad)


def test_walk_makes_missing_dirs_and_returns_the_leaf(root: Path, root_fd: int) -> None:
    fd = safefs.open_dir(root_fd, ["a", "b", "c"], create=True)
    try:
        assert _fd_path(fd) == str(root / "a" / "b" / "c")
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError):
        safefs.open_dir(root_fd, ["a", "missing"])


@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("create", [False, True])
def test_a_symlink_at_any_level_is_refused(
    root: Path, root_fd: int, host: Path, depth: int, create: bool
) -> None:
    parts = ["a", "b", "c"]
    link = root.joinpath(*parts[: depth + 1])
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(host)
    with pytest.raises(safefs.UnsafePathError, match="a symlink"):
        safefs.open_dir(root_fd, parts, create=create)
    assert sorted(os.listdir(host)) == ["marker"]


def test_a_file_on_the_way_is_refused(root: Path, root_fd: int) -> None:
    (root / "a").write_text("")
    with pytest.raises(safefs.UnsafePathError, match="not a directory"):
        safefs.open_dir(root_fd, ["a", "b"], create=True)


def test_dot_components_are_refused(root_fd: int) -> None:
    for bad in ("..", ".", "", "a/b"):
        with pytest.raises(safefs.UnsafePathError):
            safefs.open_dir(root_fd, [bad], create=True)


def _swap_at(
    monkeypatch: pytest.MonkeyPatch, call: int, swap: Callable[[], None]
) -> list[tuple[Any, ...]]:
    """Run ``swap`` just before the ``call``-th os.open made through safefs."""
    real_open = os.open
    calls: list[tuple[Any, ...]] = []

    def racing_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        calls.append((path, flags))
        if len(calls) == call:
            swap()
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(safefs.os, "open", racing_open)
    return calls


@pytest.mark.parametrize("call", [1, 2, 3])
def test_a_dir_swapped_for_a_symlink_between_steps_is_refused(
    root: Path, root_fd: int, host: Path, monkeypatch: pytest.MonkeyPatch, call: int
) -> None:
    parts = ["a", "b", "c"]
    (root / "a" / "b" / "c").mkdir(parents=True)
    victim = root.joinpath(*parts[:call])

    def swap() -> None:
        victim.rename(root / f"moved-{call}")
        victim.symlink_to(host)

    _swap_at(monkeypatch, call, swap)
    with pytest.raises(safefs.UnsafePathError):
        safefs.open_dir(root_fd, parts)


def test_a_symlink_planted_between_mkdir_and_open_is_refused(
    root: Path, root_fd: int, host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Call 1 finds "a" missing; the attacker wins the race for the name before call 2.
    def plant() -> None:
        os.rmdir(root / "a")
        (root / "a").symlink_to(host)

    _swap_at(monkeypatch, 2, plant)
    with pytest.raises(safefs.UnsafePathError, match="a symlink"):
        safefs.open_dir(root_fd, ["a", "b"], create=True)
    assert sorted(os.listdir(host)) == ["marker"]


def test_a_dir_renamed_away_after_the_walk_keeps_the_fd_on_the_real_dir(
    root: Path, root_fd: int, host: Path
) -> None:
    (root / "a").mkdir()
    fd = safefs.open_dir(root_fd, ["a"])
    try:
        (root / "a").rename(root / "elsewhere")
        (root / "a").symlink_to(host)
        safefs.write_file(fd, "f", b"x")
    finally:
        os.close(fd)
    assert (root / "elsewhere" / "f").read_bytes() == b"x"
    assert sorted(os.listdir(host)) == ["marker"]


def test_leaf_is_a_dir_or_a_regular_file_never_a_link(root: Path, root_fd: int, host: Path) -> None:
    (root / "file").write_text("")
    (root / "link").symlink_to(host / "marker")
    os.mkfifo(root / "fifo")
    fd, is_dir = safefs.open_leaf(root_fd, "new", create_dir=True)
    os.close(fd)
    assert is_dir
    assert (root / "new").is_dir()
    fd, is_dir = safefs.open_leaf(root_fd, "file")
    os.close(fd)
    assert not is_dir
    with pytest.raises(safefs.UnsafePathError, match="a symlink"):
        safefs.open_leaf(root_fd, "link")
    with pytest.raises(safefs.UnsafePathError, match="not a directory or file"):
        safefs.open_leaf(root_fd, "fifo")


def test_chown_acts_on_the_walked_object_not_a_swapped_in_link(
    root: Path, root_fd: int, host: Path
) -> None:
    (root / "d").mkdir()
    (root / "f").write_text("")
    for name in ("d", "f"):
        fd, _ = safefs.open_leaf(root_fd, name)
        try:
            # Swapped for a link to the host file after the walk: the fd still holds the original.
            (root / name).rename(root / f"{name}-moved")
            (root / name).symlink_to(host / "marker")
            safefs.chown_fd(fd, 4242, 4343)
        finally:
            os.close(fd)
        moved = (root / f"{name}-moved").stat()
        assert (moved.st_uid, moved.st_gid) == (4242, 4343)
    marker = (host / "marker").stat()
    assert (marker.st_uid, marker.st_gid) == (os.getuid(), os.getgid())


@pytest.mark.parametrize(
    "planted", ["f", "f.tmp", ".f.tmp"], ids=["target", "fixed temp", "dotted temp"]
)
def test_write_never_goes_through_a_planted_symlink(
    root: Path, root_fd: int, host: Path, planted: str
) -> None:
    (root / planted).symlink_to(host / "marker")
    safefs.write_file(root_fd, "f", b"new", 0o755)
    assert (host / "marker").read_text() == "host"
    assert stat.S_IMODE((host / "marker").stat().st_mode) == 0o600
    assert not (root / "f").is_symlink()
    assert (root / "f").read_bytes() == b"new"
    assert stat.S_IMODE((root / "f").stat().st_mode) == 0o755
    leftovers = sorted(p.name for p in root.iterdir())
    assert leftovers == sorted({"f", planted})


def test_write_over_a_dir_is_refused_and_leaves_no_temp(root: Path, root_fd: int) -> None:
    (root / "f").mkdir()
    with pytest.raises(safefs.UnsafePathError, match="a directory"):
        safefs.write_file(root_fd, "f", b"x")
    assert [p.name for p in root.iterdir()] == ["f"]


def test_temp_names_taken_by_someone_are_drawn_again(
    root: Path, root_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = iter(["aa", "aa", "bb"])
    monkeypatch.setattr(safefs.secrets, "token_hex", lambda _n: next(draws))
    (root / ".f.aa.tmp").symlink_to("/nonexistent")
    safefs.write_file(root_fd, "f", b"x")
    assert (root / "f").read_bytes() == b"x"
    assert (root / ".f.aa.tmp").is_symlink()


def test_copy_refuses_a_source_that_is_not_a_regular_file(
    root: Path, root_fd: int, host: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"\x7fELF" * 100_000)
    assert safefs.copy_file(str(src), root_fd, "bin", 0o755)
    assert (root / "bin").read_bytes() == src.read_bytes()
    assert stat.S_IMODE((root / "bin").stat().st_mode) == 0o755
    assert not safefs.copy_file(str(tmp_path / "absent"), root_fd, "x")
    (tmp_path / "link").symlink_to(host / "marker")
    with pytest.raises(safefs.UnsafePathError, match="a symlink"):
        safefs.copy_file(str(tmp_path / "link"), root_fd, "x")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(safefs.UnsafePathError, match="not a regular file"):
        safefs.copy_file(str(tmp_path / "fifo"), root_fd, "x")


def test_read_is_bounded_and_never_through_a_link(root: Path, root_fd: int, host: Path) -> None:
    (root / "ok").write_bytes(b"12345")
    assert safefs.read_file(root_fd, "ok", 5) == b"12345"
    with pytest.raises(safefs.UnsafePathError, match="larger than 4"):
        safefs.read_file(root_fd, "ok", 4)
    assert safefs.read_file(root_fd, "absent", 5) is None
    (root / "link").symlink_to(host / "marker")
    with pytest.raises(safefs.UnsafePathError, match="a symlink"):
        safefs.read_file(root_fd, "link", 100)
    os.mkfifo(root / "fifo")
    with pytest.raises(safefs.UnsafePathError, match="not a regular file"):
        safefs.read_file(root_fd, "fifo", 100)
