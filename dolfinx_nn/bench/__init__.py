"""Benchmarks of the bridge (``dolfinx-nn bench ...``)."""
