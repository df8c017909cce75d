"""Thread settings: the cores a process may use, and the OpenMP spin setting hapruned makes on import."""

import os
import sys

import pytest

import processes

SPIN = "import os, sys\n{first}\nprint(os.environ.get('GOMP_SPINCOUNT'))\n"


def test_available_cores_follow_the_affinity_mask():
    # a process pinned to one CPU (as taskset or a container's cpuset pins it) may use one core
    script = "import os, hapruned; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(hapruned.available_cores())"
    result = processes.run([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


@pytest.mark.parametrize("first, environment, expected", [
    ("import hapruned", {}, "2000"),                  # hapruned before torch: the short spin
    ("import hapruned", {"GOMP_SPINCOUNT": "7"}, "7"),  # the user's own setting is kept
    ("import torch, hapruned", {}, "None"),           # torch first: too late to matter, so left alone
])
def test_gomp_spincount_is_set_before_torch_loads(first, environment, expected):
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | environment
    result = processes.run([sys.executable, "-c", SPIN.format(first=first)], timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == expected


@pytest.mark.parametrize("torch_used_first", [False, True])
def test_set_num_threads_holds_for_torch_and_numba(torch_used_first):
    """One thread for both pools, whether or not torch has run a parallel op before the call, and still
    after numba's first parallel kernel (starting numba's OpenMP pool may reset the shared thread count)."""
    script = (
        "import numpy as np, torch, numba, hapruned\n"
        "from hapruned.env.batched import BatchedDSAEnv\n"
        "from hapruned.env.config import DSAConfig\n"
        + ("torch.ones(1_000_000).sum()\n" if torch_used_first else "")
        + "hapruned.set_num_threads(1)\n"
        "env = BatchedDSAEnv(DSAConfig.setup('A'), num_envs=64)\n"
        "env.reset(seed=0)\n"
        "env.step(np.zeros((64, env.config.n_users), dtype=np.int64))\n"
        "torch.ones(1_000_000).sum()\n"
        "print(torch.get_num_threads(), numba.get_num_threads())\n"
    )
    result = processes.run([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]
