"""Benchmarks: each module has ``main(argv) -> int`` and prints its figures.

Run them with ``actionrunner bench NAME`` (e.g. ``actionrunner bench backlog``).
"""
