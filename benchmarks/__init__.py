"""Benchmarks of hubserve against the offline limits and its peers, on loopback, in one run.

Run them with `python -m benchmarks.run` (see `benchmarks/README.md`); they are not part of the test suite,
only a quick smoke run of the harness is (`tests/test_benchmarks_smoke.py`).
"""
