"""Run every benchmark module (``bench/*_bench.py``), or those named on the command line."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the named benchmark modules, or all of them."""
    here = Path(__file__).resolve().parent
    names = argv or sorted(p.stem for p in here.glob("*_bench.py"))
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== {name} ===", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
