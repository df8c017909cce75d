import os

import pytest
import torch

import hapruned
import hapruned.env.batched  # noqa: F401  (starts numba, so both thread pools exist before they are sized)
import processes
from hapruned.ops import emulated


def pytest_configure(config):
    processes.mark_session()  # before any test starts a process


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """Fails a test that leaves a process running (a child, or anything it started), and kills it."""
    yield
    left = processes.left_behind()
    if left:
        pytest.fail("the test left processes running (now killed): " + "; ".join(
            f"pid {pid}: {command[:200]}" for pid, command in left.items()), pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests use tiny tensors: extra threads only add contention (tests that need more set them)."""
    hapruned.set_num_threads(1)


@pytest.fixture(params=["cpu", pytest.param("emulated", marks=pytest.mark.emulated), pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Runs a test on each device: the CPU; the emulated CUDA device, where the CUDA kernels run on the
    CPU with CPU tensors (marked ``emulated``; the test sees the device "cpu"); and a GPU (marked ``cuda``,
    skipped without one)."""
    if request.param != "emulated":
        yield request.param
        return
    if not emulated.AVAILABLE:  # skipped, except on CI (pytest_collection_modifyitems)
        pytest.fail(f"{emulated.MISSING_REASON}; CI must run the emulated tests")
    with emulated.cuda_kernels_on_cpu():
        yield "cpu"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a GPU; without one they are skipped, not failed. Tests marked
    ``emulated`` need hapruned._C_emu; without it they are skipped, except on CI, where they fail."""
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_emulated = pytest.mark.skip(reason=emulated.MISSING_REASON)
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
        if "emulated" in item.keywords and not emulated.AVAILABLE and not os.environ.get("CI"):
            item.add_marker(skip_emulated)
