"""Benchmarks of the goals a user cares about; run each from the repository root as
`python -m bench.<name>` (see bench/README.md)."""
