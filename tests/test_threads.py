"""Thread settings: the cores a process may use, and the OpenMP spin setting hapruned makes on import."""

import os
import subprocess
import sys

import pytest

import hapruned

SPIN = "import os, sys\n{first}\nprint(os.environ.get('GOMP_SPINCOUNT'))\n"


def test_available_cores_is_the_affinity_mask():
    assert hapruned.available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("first, environment, expected", [
    ("import hapruned", {}, "2000"),                  # hapruned before torch: the short spin
    ("import hapruned", {"GOMP_SPINCOUNT": "7"}, "7"),  # the user's own setting is kept
    ("import torch, hapruned", {}, "None"),           # torch first: too late to matter, so left alone
])
def test_gomp_spincount_is_set_before_torch_loads(first, environment, expected):
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | environment
    result = subprocess.run([sys.executable, "-c", SPIN.format(first=first)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == expected
