"""Benchmarks that print figures (no assertions): ``python -m bench.<name>``; see README.md."""
