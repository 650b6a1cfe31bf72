"""Benchmarks. Run each as a module from the repository root, e.g. `python -m bench.bench_app --help`."""
