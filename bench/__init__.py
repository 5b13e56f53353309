"""Benchmarks: each `bench_<area>.py` exposes `run(quick) -> list[dict]`; `python -m bench` runs them all."""
