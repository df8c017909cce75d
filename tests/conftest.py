import pytest
import torch

import hapruned
import hapruned.env.batched  # noqa: F401  (starts numba, so both thread pools exist before they are sized)
import processes


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


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Runs a test on each device: the CUDA run is marked ``cuda`` (skipped without a GPU)."""
    return request.param


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a GPU; without one they are skipped, not failed."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
