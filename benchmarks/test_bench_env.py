"""Environment speed: the batched numba env against the plain NumPy reference, in the same run.

    python -m pytest benchmarks/test_bench_env.py --benchmark-only

Both play one episode (T = 100 slots) of paper setup B (N = 10 users, K = 5 channels, primary
users drawn every slot) with random actions (idle included) drawn beforehand; resets are not timed.
Numba and torch run on one thread.

- ``batched_4096_envs``: BatchedDSAEnv with B = 4096 environments (copy=False), one call per slot.
- ``reference_16_envs``: ReferenceDSAEnv, one Python call per environment and slot. It is timed on
  16 environments, not 4096, because its cost is linear in the number of environments (one
  call each); the comparison is per agent-step.

The rates (agent-steps per second = envs * N * T / the fastest episode, the round least
disturbed by other processes, on both sides) and the speed-up are stored in each benchmark's
``extra_info`` and printed beside the targets: >= 20 million agent-steps/s for the batched env and
>= 200x the reference per agent-step. Speed is reported, not asserted: use pytest-benchmark's
``--benchmark-compare-fail`` to catch regressions.
"""

import numpy as np
import pytest

import hapruned
from hapruned.env import BatchedDSAEnv, DSAConfig
from hapruned.env.reference import ReferenceDSAEnv

CONFIG = DSAConfig.setup("B")
BATCHED_ENVS = 4096
REFERENCE_ENVS = 16
TARGET_AGENT_STEPS_PER_S = 20e6
TARGET_SPEEDUP = 200.0

rates = {}  # agent-steps per second measured in this run, by implementation


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import numba
    import torch

    before = numba.get_num_threads(), torch.get_num_threads()
    hapruned.set_num_threads(1)
    yield
    numba.set_num_threads(before[0])
    torch.set_num_threads(before[1])


def random_actions(num_envs, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, CONFIG.n_actions, size=(CONFIG.horizon, num_envs, CONFIG.n_users))


def record_rate(benchmark, name, num_envs):
    if benchmark.stats is None:  # --benchmark-disable: the code ran once, untimed
        return None
    rate = num_envs * CONFIG.n_users * CONFIG.horizon / benchmark.stats.stats.min
    rates[name] = rate
    benchmark.extra_info.update(envs=num_envs, agent_steps_per_s=rate)
    print(f"\n{name}: {rate / 1e6:.3f} million agent-steps/s ({num_envs} envs)")
    return rate


@pytest.mark.benchmark(group="env-episode")
def test_reference_16_envs(benchmark):
    envs = [ReferenceDSAEnv(CONFIG, seed=b) for b in range(REFERENCE_ENVS)]
    actions = random_actions(REFERENCE_ENVS)

    def reset():
        for env in envs:
            env.reset()

    def episode():
        for step_actions in actions:
            for env, env_actions in zip(envs, step_actions):
                env.step(env_actions)

    benchmark.pedantic(episode, setup=reset, rounds=10, warmup_rounds=1)
    record_rate(benchmark, "reference", REFERENCE_ENVS)


@pytest.mark.benchmark(group="env-episode")
def test_batched_4096_envs(benchmark):
    env = BatchedDSAEnv(CONFIG, BATCHED_ENVS, seed=0, copy=False)
    actions = random_actions(BATCHED_ENVS)

    def reset():
        env.reset()

    def episode():
        for step_actions in actions:
            env.step(step_actions)

    benchmark.pedantic(episode, setup=reset, rounds=30, warmup_rounds=3)
    rate = record_rate(benchmark, "batched", BATCHED_ENVS)
    if rate is None:
        return
    if "reference" in rates:  # measured just before, in this run
        speedup = rate / rates["reference"]
        benchmark.extra_info["speedup_vs_reference"] = speedup
        print(f"batched / reference: {speedup:.0f}x per agent-step (target {TARGET_SPEEDUP:.0f}x)")
    print(f"target: {TARGET_AGENT_STEPS_PER_S / 1e6:.0f} million agent-steps/s")
