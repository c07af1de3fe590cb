"""Benchmarks: `python -m tests.bench [--quick] [NAME…]` runs every tests/bench/bench_*.py.

Each bench_NAME module has ``main(quick: bool) -> None`` that prints its own table, always as
ratios against a baseline measured in the same run (never a bare time alone)."""
