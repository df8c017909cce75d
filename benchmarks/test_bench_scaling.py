"""What a training run costs as the number of users grows: N = 10, 20, 40, 100 users on K = N / 2 channels,
the ``scale`` preset (16 episodes of 100 slots per iteration, difference rewards, joint critic), one thread.

    python -m pytest benchmarks/test_bench_scaling.py --benchmark-only -s

Phases, each timed on its own:

- ``simulator``: one episode of the 16 environments, random actions (the environment alone);
- ``rollout``: the same episode played by the actors (observation encoding, actor steps, the simulator);
- ``iteration``: a whole training iteration without a prune event (rollout, critic values, GAE, update);
  the update is ``iteration`` minus ``rollout``;
- ``prune``: one prune event of every actor (magnitude masks at the schedule's 95%);
- ``evaluation``: the held-out evaluation (100 episodes, sampled actions);
- ``oracle``: the centralised oracle over the same 100 held-out episodes (a matching per slot).

``extra_info`` holds the seconds per round and, for the iteration, the process's peak resident memory
afterwards (cases run in ascending N, so it is this N's peak: each case's memory grows with N).
"""

import resource

import numpy as np
import pytest
import torch

from hapruned.algos.config import TrainConfig
from hapruned.algos.ppo import IAGCPPO
from hapruned.baselines.base import held_out_rewards
from hapruned.baselines.oracle import Oracle
from hapruned.env.batched import BatchedDSAEnv

USERS = [10, 20, 40, 100]
PHASES = ["simulator", "rollout", "iteration", "prune", "evaluation", "oracle"]
EVAL_EPISODES = 100


@pytest.fixture(scope="module", autouse=True)
def threads(one_thread):
    yield


_learners = {}


def learner(n_users):
    """One learner per N for the module (building one at N = 100 takes seconds); the last N's is dropped
    before the next is built, so that peak memory is one N's."""
    if n_users not in _learners:
        _learners.clear()
        config = TrainConfig.preset("scale", n_users=n_users, n_channels=n_users // 2, seed=0)
        _learners[n_users] = IAGCPPO(config)
    return _learners[n_users]


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("n_users", USERS)
def test_cost_per_phase(benchmark, n_users, phase):
    benchmark.group = f"scaling-N{n_users}"
    algo = learner(n_users)
    config, B = algo.config, algo.config.envs_per_iteration
    rounds = 1 if n_users >= 40 and phase in ("iteration", "evaluation") else 3
    if phase == "simulator":
        env = BatchedDSAEnv(algo.env_config, B)
        rng = np.random.default_rng(0)
        actions = rng.integers(0, config.n_channels + 1, size=(algo.env_config.horizon, B, n_users))

        def run():
            env.reset()
            for a in actions:
                env.step(a)
    elif phase == "rollout":
        def run():
            with torch.inference_mode():
                algo._play(algo.env, B, algo.generator)
    elif phase == "iteration":
        # iterations 1-4 of a fresh learner (at most 4 calls here): the first prune event is at i_prune = 5
        run = lambda: algo.train_iteration(algo.pruner.schedule.last_iteration + 1)  # noqa: E731
    elif phase == "prune":
        run = lambda: algo.pruner.apply(config.sparsity)  # noqa: E731 (an event at 95%, outside the schedule)
    elif phase == "evaluation":
        run = lambda: algo.evaluate(EVAL_EPISODES, seed=1)  # noqa: E731
    else:
        run = lambda: held_out_rewards(Oracle(), algo.env_config, EVAL_EPISODES, seed=1)  # noqa: E731
    if rounds > 1:  # compile and warm up outside the timing (the large cases follow warm smaller ones)
        run()
    benchmark.pedantic(run, rounds=rounds)
    if benchmark.stats is None:  # --benchmark-disable
        return
    benchmark.extra_info["seconds"] = benchmark.stats.stats.min
    if phase == "iteration":
        benchmark.extra_info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nN = {n_users}, {phase}: {benchmark.stats.stats.min * 1e3:.1f} ms"
          + (f", peak RSS {benchmark.extra_info['peak_rss_mb']:.0f} MB" if phase == "iteration" else ""))
