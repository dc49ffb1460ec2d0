"""The package's dependency direction, checked on the import statements themselves.

Leaves import nothing of ours but other leaves (what a poll produces and the
kernel's cgroup files among them); drivers import only leaves; the
renderers read a snapshot view and never import the poller; the process
counter never imports a stats source; only the wiring module and the entry
point name a concrete driver; only the api package, the wiring and the entry
point (and the simulated engine outside the package) import aiohttp.web; and
nothing imports the entry point: what it runs is built in ``exporter.wiring``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "exporter"
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
#: The modules that know the engine is Docker: its HTTP API and its JSON.
CONCRETE_DRIVERS = ("exporter.drivers.docker", "exporter.drivers.docker_json")
#: Above the api package: they build the app from settings (and, for __main__, flags).
TOP = ("exporter.wiring", "exporter.__main__")
#: The command line's own tests, and the names of the command line they may import.
CLI_TESTS = {"tests.unit.test_cli", "tests.unit.test_flags"}
CLI_NAMES = {"main", "build_parser", "load_settings", "COMMANDS"}


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


def _names_any(imports: set[str], modules: tuple[str, ...]) -> bool:
    return any(i == m or i.startswith(m + ".") for i in imports for m in modules)


def test_only_the_wiring_and_the_entry_point_name_a_concrete_driver() -> None:
    users = {
        m
        for m, imports in MODULES.items()
        if _names_any(imports, CONCRETE_DRIVERS) and not m.startswith("exporter.drivers")
    }
    assert users <= set(TOP), users


def test_the_architecture_test_sees_the_concrete_driver_imports() -> None:
    # Else the test above would pass on a pattern that matches nothing.
    assert _names_any(MODULES["exporter.wiring"], ("exporter.drivers.docker",))
    assert _names_any(_imports(ROOT / "tests/unit/test_docker_json.py"), CONCRETE_DRIVERS)


def test_only_the_api_package_imports_aiohttp_web() -> None:
    users = {
        m for m, imports in MODULES.items() if any(i.startswith("aiohttp.web") for i in imports)
    }
    allowed = {m for m in users if m.startswith("exporter.api")} | set(TOP)
    assert users <= allowed, users - allowed


def test_nothing_below_the_api_imports_it() -> None:
    for module, imports in MODULES.items():
        if module.startswith("exporter.api") or module in TOP:
            continue
        assert not any(i.startswith("exporter.api") for i in imports), module


def test_only_the_entry_point_imports_the_wiring() -> None:
    users = {m for m, imports in MODULES.items() if _names_any(imports, ("exporter.wiring",))}
    assert users <= {"exporter.__main__"}, users


def _main_imports(path: Path) -> set[str]:
    """Return what ``path`` imports of exporter.__main__ ("*" for the module itself)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update("*" for a in node.names if a.name == "exporter.__main__")
        elif isinstance(node, ast.ImportFrom) and node.module == "exporter.__main__":
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "exporter":
            names.update("*" for a in node.names if a.name == "__main__")
    return names


def test_nothing_imports_the_entry_point() -> None:
    """The package, the benches and the tests build through exporter.wiring, never __main__.

    The command line's own tests may import the command line (its parser and
    ``main``), and only that.
    """
    found = {}
    for top in ("exporter", "bench", "tests"):
        for path in (ROOT / top).rglob("*.py"):
            names = _main_imports(path)
            if names:
                found[".".join(path.relative_to(ROOT).with_suffix("").parts)] = names
    assert set(found) - CLI_TESTS == set(), found
    for module, names in found.items():
        assert names <= CLI_NAMES, (module, names - CLI_NAMES)
    # The check above sees the imports it allows: it is not looking at nothing.
    assert found.get("tests.unit.test_cli", set()) & CLI_NAMES
