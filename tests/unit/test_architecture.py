"""The package's dependency direction, checked on the import statements themselves.

Leaves import nothing of ours but other leaves (what a poll produces and the
kernel's cgroup files among them); drivers import only leaves; the
renderers read a snapshot view and never import the poller; the process
counter never imports a stats source; nothing but the entry point names the
concrete Docker driver; only the api package (and the simulated engine
outside the package) imports aiohttp.web.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"
LEAVES = {
    "errors",
    "naming",
    "paths",
    "models",
    "config",
    "replicas",
    "concurrency",
    "safefs",
    "vpc",
    "snapshot",
    "cgroupfs",
}
RENDERERS = ("exporter.exposition", "exporter.metrics")


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _ours(imports: set[str]) -> set[str]:
    return {i for i in imports if i == "exporter" or i.startswith("exporter.")}


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_only_leaves(leaf: str) -> None:
    imported = _ours(MODULES[f"exporter.{leaf}"])
    allowed = {f"exporter.{name}" for name in LEAVES}
    # "from exporter.naming import X" shows as exporter.naming and exporter.naming.X.
    bad = {i for i in imported if not any(i == a or i.startswith(a + ".") for a in allowed)}
    assert not bad, f"exporter.{leaf} imports {sorted(bad)}"


def test_drivers_import_only_leaves_and_each_other() -> None:
    for module, imports in MODULES.items():
        if not module.startswith("exporter.drivers"):
            continue
        for i in _ours(imports):
            top = i.split(".")[1] if i.count(".") else ""
            assert top in LEAVES or i.startswith("exporter.drivers"), f"{module} imports {i}"


@pytest.mark.parametrize("renderer", RENDERERS)
def test_renderers_never_import_the_poller(renderer: str) -> None:
    # They render a SnapshotView; who polls is not theirs to know.
    assert not {i for i in MODULES[renderer] if i.startswith("exporter.poller")}


def test_the_process_counter_never_imports_a_stats_source() -> None:
    # Both read the kernel's cgroup files through exporter.cgroupfs.
    imported = _ours(MODULES["exporter.processes"])
    assert not {i for i in imported if i.startswith("exporter.sources")}
    assert "exporter.cgroupfs" in imported


def test_only_the_entry_point_names_the_concrete_driver() -> None:
    users = {
        m
        for m, imports in MODULES.items()
        if any(i.startswith("exporter.drivers.docker") for i in imports)
        and not m.startswith("exporter.drivers")
    }
    assert users <= {"exporter.__main__", "exporter.wiring"}, users


def test_only_the_api_package_imports_aiohttp_web() -> None:
    users = {
        m for m, imports in MODULES.items() if any(i.startswith("aiohttp.web") for i in imports)
    }
    allowed = {m for m in users if m.startswith("exporter.api")} | {
        "exporter.__main__",
        "exporter.wiring",
    }
    assert users <= allowed, users - allowed


def test_nothing_below_the_api_imports_it() -> None:
    for module, imports in MODULES.items():
        if module.startswith("exporter.api") or module in ("exporter.__main__", "exporter.wiring"):
            continue
        assert not any(i.startswith("exporter.api") for i in imports), module
