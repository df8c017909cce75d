"""Imports hapruned before anything imports torch, so that the benchmarks run with the OpenMP spin setting
the command line has (see hapruned/__init__.py)."""

import pytest

import hapruned


@pytest.fixture(scope="module")
def one_thread():
    """torch and numba on one thread for a module's cases, so their ratios do not depend on the core count."""
    import torch

    previous = torch.get_num_threads()
    hapruned.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
