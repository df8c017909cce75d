"""Imports hapruned before anything imports torch, so that the benchmarks run with the OpenMP spin setting
the command line has (see hapruned/__init__.py)."""

import hapruned  # noqa: F401
