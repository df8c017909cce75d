"""Training throughput (one iteration = rollout + update (+ prune step)), in agent-steps per second.

hapruned's IAGCPPO against the straightforward implementation in ``naive_baseline.py`` (one
``nn.LSTM`` per agent, one environment stepped at a time in Python), on the same config, in the same
run; hapruned's RecurrentDQN against the naive recurrent DQN the same way. The naive case runs first; the hapruned case on the same config records its speed-up over it in
``extra_info["speedup_vs_naive"]``. The ``fast`` preset as shipped is timed too, for regression checks.

    python -m pytest benchmarks/test_bench_train.py --benchmark-only -s
"""

import pytest
import torch

import hapruned
from hapruned.algos.config import TrainConfig
from hapruned.algos.dqn import RecurrentDQN
from hapruned.algos.ppo import IAGCPPO
from naive_baseline import NaiveIAGCPPO, NaiveRecurrentDQN

# the measuring point: the paper's N, K, T with 16 episodes per iteration, and the paper's critic and
# prune mode (each agent's own observation, pruned weights train on, as the naive baseline has them;
# the fast preset's joint critic is cheaper)
BENCH_CONFIG = dict(n_users=10, n_channels=5, horizon=100, envs_per_iteration=16, method="harmonic", sparsity=0.95,
                    critic_input="own", prune_mode="regrow")
IMPLEMENTATIONS = {"naive": NaiveIAGCPPO, "hapruned": IAGCPPO}
# naive iterations take tens of seconds, so it gets a single timed round
ROUNDS = {"naive": 1, "hapruned": 3}

throughput = {}  # implementation -> agent-steps per second, shared by the cases of one run


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    hapruned.set_num_threads(2)


def measure(benchmark, algo, name, rounds, against="naive"):
    iteration = iter(range(1, 1_000_000))
    steps = []

    def one_iteration():
        steps.append(algo.train_iteration(next(iteration))["agent_steps"])
        if algo.config.device.startswith("cuda"):
            torch.cuda.synchronize()

    benchmark.pedantic(one_iteration, rounds=rounds, iterations=1, warmup_rounds=1)
    rate = steps[-1] / benchmark.stats.stats.mean
    throughput[name] = rate
    benchmark.extra_info["agent_steps_per_iteration"] = steps[-1]
    benchmark.extra_info["agent_steps_per_s"] = rate
    if against is not None and name != against and against in throughput:
        benchmark.extra_info["speedup_vs_naive"] = rate / throughput[against]
    speedup = benchmark.extra_info.get("speedup_vs_naive")
    print(f"\n{name}: {rate:.0f} agent-steps/s" + (f", {speedup:.1f}x the naive baseline" if speedup else ""))


@pytest.mark.benchmark(group="train-iteration-cpu")
@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_train_throughput_cpu(benchmark, name):
    config = TrainConfig.preset("fast", **BENCH_CONFIG, device="cpu")
    measure(benchmark, IMPLEMENTATIONS[name](config), name, ROUNDS[name])


@pytest.mark.benchmark(group="train-iteration-cpu")
def test_train_throughput_cpu_fast_preset(benchmark):
    """The ``fast`` preset as shipped (joint-observation critic, ``masked`` pruning), what ``hapruned train
    --preset fast`` runs. Its critic does a tenth of the naive baseline's critic work, so it gets no ratio."""
    shipped = {**BENCH_CONFIG, "critic_input": "joint", "prune_mode": "masked"}
    config = TrainConfig.preset("fast", **shipped, device="cpu")
    measure(benchmark, IAGCPPO(config), "hapruned-fast-preset", ROUNDS["hapruned"], against=None)


DQN_IMPLEMENTATIONS = {"naive-dqn": NaiveRecurrentDQN, "hapruned-dqn": RecurrentDQN}


@pytest.mark.benchmark(group="dqn-train-iteration-cpu")
@pytest.mark.parametrize("name", list(DQN_IMPLEMENTATIONS))
def test_dqn_train_throughput_cpu(benchmark, name):
    """Recurrent DQN with parameter sharing as the ``fast`` preset runs it (16 episodes, 8 updates per
    iteration), against the naive version: one shared ``nn.LSTM``, one environment at a time with a
    Python loop over agents. Reward scaling off on both sides (the naive one has none)."""
    config = TrainConfig.preset("fast", algo="dqn", n_users=10, n_channels=5, horizon=100, normalize_rewards=False)
    measure(benchmark, DQN_IMPLEMENTATIONS[name](config), name, ROUNDS["naive" if "naive" in name else "hapruned"],
            against="naive-dqn")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.benchmark(group="train-iteration-cuda")
@pytest.mark.parametrize("envs", [16, 64, 256, 1024])
def test_train_throughput_cuda(benchmark, envs):
    """hapruned on the GPU at many environments per iteration (compare with the CPU cases above)."""
    config = TrainConfig.preset("fast", **{**BENCH_CONFIG, "envs_per_iteration": envs}, minibatches=4, device="cuda")
    measure(benchmark, IAGCPPO(config), f"hapruned-cuda-{envs}", rounds=3)
