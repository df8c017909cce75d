"""Speed when other processes share the machine, against the same work on a quiet machine, in one run.

    python -m pytest benchmarks/test_bench_shared.py --benchmark-only -s

Each group times one piece of work quiet, then while helper processes the benchmark starts (and
stops) hold the cores:

- ``fused step B=1``: ``masked_lstm_cell`` with G = 10 agents, B = 1, H = 128, I = 9, 95% bool masks
  (an inference step), 1,000 calls per round; two busy-loop processes alongside.
- ``env step B=256``: ``BatchedDSAEnv.step`` of setup B with 256 environments, 1,000 steps per round;
  two busy-loop processes alongside.
- ``train iteration``: one ``IAGCPPO`` iteration of ``hapruned train --setup A --envs-per-iteration 16``;
  another such training with default threads alongside (two trainings side by side).

Threads are the defaults of ``hapruned train``: every core this process may use. Every round is
recorded, and the ratios are of the means, each round's mean over its 1,000 calls (or one iteration):
the targets are <= 3x quiet for the step cases in every round, <= 2.5x for the training. The machine
must be otherwise quiet; ``benchmarks/side_by_side.py`` measures two whole trainings the same way.
"""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hapruned
from hapruned import ops
from hapruned.algos.config import TrainConfig
from hapruned.algos.ppo import IAGCPPO
from hapruned.env import BatchedDSAEnv, DSAConfig

REPO = Path(__file__).resolve().parents[1]
CALLS = 1000
HELPER_SECONDS = 300  # a busy loop's life, should the benchmark die before stopping it
BUSY_LOOP = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"
TARGETS = {"fused step B=1": 3.0, "env step B=256": 3.0, "train iteration": 2.5}
TRAIN_FLAGS = ["--setup", "A", "--envs-per-iteration", "16"]  # both trainings: the paper preset, 16 episodes per iteration

quiet_means = {}  # group -> mean seconds per call on the quiet machine, measured first in this run


@pytest.fixture(scope="module", autouse=True)
def default_threads():
    before = torch.get_num_threads()
    hapruned.set_num_threads(hapruned.available_cores())
    yield
    hapruned.set_num_threads(before)


@contextlib.contextmanager
def helpers(load: str):
    """Runs the helper processes of ``load`` (bounded: busy loops end after HELPER_SECONDS, the training
    after a fixed number of iterations) and stops them on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            "quiet": [],
            "two busy processes": [[sys.executable, "-c", BUSY_LOOP, str(HELPER_SECONDS)]] * 2,
            "another training": [[sys.executable, "-m", "hapruned", "train", *TRAIN_FLAGS, "--iterations", "200",
                                  "--seed", "1", "--out", f"{tmp}/run", "--json"]],
        }[load]
        processes = []
        try:
            for command in commands:  # each in its own session, so that killing it stops all it started
                processes.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                  start_new_session=True))
            time.sleep(10 if load == "another training" else 0.5)  # a training: past its imports and compilation
            yield
        finally:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def measure(benchmark, group, load, work, calls, rounds):
    """Times ``work`` (``calls`` calls per round) under ``load``; records per-call means and the ratio to quiet."""
    benchmark.group = group
    with helpers(load):
        benchmark.pedantic(work, rounds=rounds, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable
        return
    per_call = [t / calls for t in benchmark.stats.stats.data]
    mean = float(np.mean(per_call))
    benchmark.extra_info.update(load=load, mean_per_call_s=mean, worst_round_per_call_s=max(per_call))
    if load == "quiet":
        quiet_means[group] = mean
        print(f"\n{group}, quiet: {mean * 1e6:.1f} us per call")
    elif group in quiet_means:
        ratio, worst = mean / quiet_means[group], max(per_call) / quiet_means[group]
        benchmark.extra_info.update(ratio_to_quiet=ratio, worst_round_ratio_to_quiet=worst)
        print(f"\n{group}, {load}: {mean * 1e6:.1f} us per call, {ratio:.2f}x quiet (worst round {worst:.2f}x; "
              f"target <= {TARGETS[group]}x)")


LOADS = ["quiet", "two busy processes"]


@pytest.mark.parametrize("load", LOADS)
def test_fused_step(benchmark, load):
    gen = torch.Generator().manual_seed(0)
    groups, hidden, inputs = 10, 128, 9
    shapes = [(groups, 1, inputs), (groups, 1, hidden), (groups, 1, hidden), (groups, 4 * hidden, inputs),
              (groups, 4 * hidden, hidden), (groups, 4 * hidden)]
    tensors = [0.3 * torch.randn(s, generator=gen) for s in shapes]
    masks = [ops.magnitude_prune_mask(w.flatten(1), 0.95).view_as(w) for w in tensors[3:5]]

    def calls():
        with torch.no_grad():
            for _ in range(CALLS):
                ops.masked_lstm_cell(*tensors, *masks)

    measure(benchmark, "fused step B=1", load, calls, CALLS, rounds=5)


@pytest.mark.parametrize("load", LOADS)
def test_env_step(benchmark, load):
    config = DSAConfig.setup("B")
    env = BatchedDSAEnv(config, 256, seed=0, copy=False)
    actions = np.random.default_rng(0).integers(0, config.n_actions, size=(config.horizon, 256, config.n_users))

    def calls():
        for _ in range(CALLS // config.horizon):
            env.reset()
            for step_actions in actions:
                env.step(step_actions)

    measure(benchmark, "env step B=256", load, calls, CALLS, rounds=5)


@pytest.mark.parametrize("load", ["quiet", "another training"])
def test_train_iteration(benchmark, load):
    algo = IAGCPPO(TrainConfig.preset("paper", setup="A", envs_per_iteration=16))
    iteration = iter(range(1, 1_000_000))
    measure(benchmark, "train iteration", load, lambda: algo.train_iteration(next(iteration)), 1, rounds=3)
