"""Issue 14's figures: the full cgroup poll of 50 containers before and after the new families.

Starts 50 idle managed containers on the real engine, then measures, in
child processes on the same containers and interleaved round by round (the
machine is shared: rounds spread the noise over all three), the full poll
(``Poller.poll_once``: list, inspect, stats, process counts, host totals)
through the cgroup source and the /metrics container block's bytes per
container:

- before: main's code at ``--before`` (a tree without issue 14, e.g. from
  ``git archive 06696c7``);
- after: this tree, every family on;
- after, ``--collect.disable`` of the optional groups (oom, spec, health,
  lifecycle, processes).

Run: ``.venv/bin/python -m bench.cadvisor_bench --before /tmp/h10-main``.
``--fs-walk`` instead times the writable layer's sizing walk on a synthetic
layer of 10,000 files in 100 directories (the cost per entry of
``container_fs_usage_bytes``, which is why it has its own slower interval).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.containers import idle_containers

ROOT = Path(__file__).resolve().parent.parent
CONTAINERS = 50
ROUNDS = 5
POLLS = 20
OPTIONAL = "oom,spec,health,lifecycle,processes"


def child(tree: Path, app: str, env: dict[str, str]) -> dict[str, float]:
    """Run one measurement with ``tree`` on PYTHONPATH; return its figures."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cadvisor_poll.py"), app, str(POLLS)],
        env={**os.environ, "PYTHONPATH": str(tree), **env},
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def fs_walk(files: int = 10_000, dirs: int = 100, rounds: int = 5) -> None:
    """Print the median wall and CPU of sizing a synthetic layer, and per entry."""
    import tempfile
    import time

    from exporter.fsusage import layer_bytes

    with tempfile.TemporaryDirectory() as tmp:
        for d in range(dirs):
            sub = Path(tmp) / f"d{d}"
            sub.mkdir()
            for f in range(files // dirs):
                (sub / f"f{f}").write_bytes(b"x" * 100)
        walls, cpus = [], []
        for _ in range(rounds):
            cpu0, t0 = time.process_time(), time.perf_counter()
            layer_bytes(tmp, deadline=float("inf"))
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - cpu0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    entries = files + dirs
    print(
        f"layer of {entries} entries: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU "
        f"({cpu / entries * 1e6:.1f} us CPU per entry)"
    )


def main(argv: list[str]) -> None:
    """Start the containers, measure each variant in rounds, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, help="a tree of main's code")
    parser.add_argument("--fs-walk", action="store_true", help="time the layer walk only")
    args = parser.parse_args(argv)
    if args.fs_walk:
        fs_walk()
        return
    if args.before is None:
        parser.error("--before is required")
    variants = {
        "before (main)": (args.before, {}),
        "after, every family": (ROOT, {}),
        f"after, --collect.disable={OPTIONAL}": (ROOT, {"EXPORTER_COLLECT_DISABLE": OPTIONAL}),
    }
    with idle_containers(CONTAINERS) as names:
        app = names[0].split("-")[1]
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for _ in range(ROUNDS):
            for what, (tree, env) in variants.items():
                runs[what].append(child(tree, app, env))
    print(
        f"| {CONTAINERS} containers, cgroup source | poll wall ms | poll CPU ms | bytes/container |"
    )
    print("|---|---|---|---|")
    base = statistics.median(r["cpu"] for r in runs["before (main)"])
    for what, figures in runs.items():
        assert all(f["with_stats"] == CONTAINERS for f in figures), figures
        wall = statistics.median(f["wall"] for f in figures) * 1000
        cpu = statistics.median(f["cpu"] for f in figures)
        size = statistics.median(f["bytes_per_container"] for f in figures)
        print(f"| {what} | {wall:.1f} | {cpu * 1000:.1f} ({cpu / base - 1:+.0%}) | {size:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
