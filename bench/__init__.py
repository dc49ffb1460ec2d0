"""Benchmarks: each ``*_bench.py`` module has a ``main() -> None`` that prints its table."""
