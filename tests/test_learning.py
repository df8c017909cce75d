"""A short training run learns: 3 users on 2 channels beat optimal slotted Aloha by a clear margin."""

import numpy as np

from hapruned.algos import IAGCPPO, TrainConfig
from hapruned.baselines.aloha import optimal_aloha_p


def expected_aloha_episode_reward(config) -> float:
    """Optimal slotted Aloha, analytically: each of N users transmits w.p. p on a uniform channel and
    succeeds when no other user picks that channel, earning E[log2(1 + beta)], beta ~ U[snr_low, snr_high]."""
    env = config.env_config
    n, k = env.n_users, env.n_channels
    p = optimal_aloha_p(n, k)
    successes_per_slot = n * p * (1 - p / k) ** (n - 1)
    rate = np.mean(np.log2(1 + np.linspace(env.snr_low, env.snr_high, 100_001)))
    return successes_per_slot * rate * env.horizon


def test_short_training_beats_slotted_aloha():
    config = TrainConfig(
        n_users=3, n_channels=2, horizon=16, hidden_size=32, method="dense", envs_per_iteration=16,
        minibatches=1, epochs=4, actor_lr=3e-3, critic_lr=3e-3, entropy_coef=0.003, iterations=20, seed=0,
    )
    algo = IAGCPPO(config)
    aloha = expected_aloha_episode_reward(config)
    untrained = np.mean(algo.evaluate(100, seed=12345))
    for iteration in range(1, config.iterations + 1):
        algo.train_iteration(iteration)
    trained = np.mean(algo.evaluate(100, seed=12345))
    # two users alone on the two channels would earn 2 * 5.17 * 16 = 165; Aloha earns about 73
    print(f"aloha {aloha:.1f}, untrained {untrained:.1f}, trained {trained:.1f}")
    assert untrained < 1.2 * aloha
    assert trained > 1.5 * aloha
