"""Sizing writable layers: du's figure, no symlink followed, within a time budget."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from exporter.fsusage import LayerSizer, OutOfTime, layer_bytes
from exporter.models import ContainerInfo, ContainerState

MIB = 1024 * 1024


def blocks(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def info(cid: str, layer: Path | str) -> ContainerInfo:
    return TypeAdapter(ContainerInfo).validate_python(
        {"id": cid, "name": cid, "state": ContainerState.RUNNING, "layer_dir": str(layer)}
    )


def layer(root: Path) -> Path:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "big").write_bytes(os.urandom(MIB))
    (root / "small").write_bytes(b"x" * 100)
    return root


def test_layer_bytes_is_du(tmp_path: Path) -> None:
    root = layer(tmp_path / "layer")
    expected = sum(
        blocks(p) for p in [root, root / "a", root / "a" / "b", root / "a/b/big", root / "small"]
    )
    assert layer_bytes(str(root), deadline=float("inf")) == expected
    assert expected >= MIB


def test_symlinks_are_counted_as_links_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge").write_bytes(os.urandom(4 * MIB))
    root = layer(tmp_path / "layer")
    before = layer_bytes(str(root), deadline=float("inf"))
    # A container makes a directory symlink to a big tree outside its layer.
    (root / "escape").symlink_to(outside)
    (root / "a" / "file-link").symlink_to(outside / "huge")
    after = layer_bytes(str(root), deadline=float("inf"))
    assert after - before < MIB  # the links' own few blocks at most
    # The layer path itself a symlink: refused, not followed.
    (tmp_path / "linked-layer").symlink_to(outside)
    with pytest.raises(OSError, match=r"Too many levels of symbolic links|Not a directory"):
        layer_bytes(str(tmp_path / "linked-layer"), deadline=float("inf"))


def test_a_walk_past_its_deadline_gives_no_figure(tmp_path: Path) -> None:
    root = layer(tmp_path / "layer")
    ticks = itertools.count()
    with pytest.raises(OutOfTime):
        layer_bytes(str(root), deadline=1, clock=lambda: next(ticks))


def test_a_round_cut_short_goes_on_where_it_stopped(tmp_path: Path) -> None:
    layers = [layer(tmp_path / f"l{i}") for i in range(3)]
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # every look at the clock costs a second
        return now[0]

    sizer = LayerSizer(budget=12.0, clock=clock)
    containers = [info(f"c{i}", p) for i, p in enumerate(layers)]
    first = sizer.measure(containers)
    assert 0 < len(first) < 3  # the budget ran out partway
    second = sizer.measure(containers)
    # The next round starts with the one the first could not finish.
    assert set(first) | set(second) == {"c0", "c1", "c2"}
    sized = first.get("c0") or second["c0"]
    assert sized.usage == layer_bytes(str(layers[0]), deadline=float("inf"))
    st = os.statvfs(layers[0])
    assert (sized.limit, sized.inodes_total) == (st.f_blocks * st.f_frsize, st.f_files)


def test_a_layer_that_is_not_there_is_skipped(tmp_path: Path) -> None:
    sizer = LayerSizer()
    sized = sizer.measure([info("gone", tmp_path / "nope"), info("ok", layer(tmp_path / "l"))])
    assert set(sized) == {"ok"}
    assert sizer.measure([info("none", "")]) == {}
