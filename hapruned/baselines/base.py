"""The policy interface shared by the non-learning schemes, and the batched evaluation loop."""

from __future__ import annotations

import numpy as np

from hapruned.env import BatchedDSAEnv, DSAConfig
from hapruned.validation import check_integer, check_number


class Policy:
    """A scheme that picks the actions of all N users in B environments at once.

    ``reset(num_envs, config, rng)`` is called at the start of every batch of episodes (one episode
    per environment) and clears all per-user state; ``rng`` is the ``np.random.Generator`` that all
    of the policy's random draws come from, so a seed fixes its behaviour.

    ``act(obs, throughput, env)`` returns ``int64[B, N]`` actions in ``0..K`` for the coming slot.
    ``obs`` is ``int64[B, N, 2]`` (each user's last action and feedback, as the env returns it) and
    ``throughput`` is ``float[B, N]``, each user's own throughput in the last slot (``log2(1 + SNR)``
    on an ACK, which is the SNR feedback a user receives; zero at the start of an episode).
    ``env`` is there for the oracle, and for the rate each user observes with ``config.observe_snr``
    (``env.observed_rate[B, N]``); decentralised schemes read only their own user's entries.
    """

    def reset(self, num_envs: int, config: DSAConfig, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def act(self, obs: np.ndarray, throughput: np.ndarray, env: BatchedDSAEnv) -> np.ndarray:
        raise NotImplementedError


def check_probability(name: str, value, low_open: bool = False) -> float:
    """Return ``value`` as a float, or raise if it is not a probability (in (0, 1] with ``low_open``)."""
    return check_number(value, name, 0, 1, low_open=low_open)


def held_out_rewards(policy: Policy, config: DSAConfig, episodes: int, seed: int) -> np.ndarray:
    """The rewards of ``policy`` on the held-out episodes a training run with evaluation seed ``seed``
    plays (one batch of ``episodes`` environments, as ``Learner.evaluate`` steps them)."""
    return evaluate(policy, config, episodes, seed=seed, num_envs=episodes)


def evaluate(
    policy: Policy,
    config: DSAConfig,
    episodes: int,
    seed: int = 0,
    num_envs: int = 500,
    progress=None,
) -> np.ndarray:
    """Play ``episodes`` episodes of ``policy`` and return their rewards ``float64[episodes]`` (Σ_t r_t).

    Episodes run in batches of ``min(num_envs, episodes)`` environments of one ``BatchedDSAEnv``
    seeded with ``seed``; the policy's generator is ``np.random.default_rng(seed)``. The episodes
    (SNRs and primary-user states) do not depend on the actions, so two policies evaluated with the
    same ``seed`` and ``num_envs`` face exactly the same episodes. A last partial batch is played in
    full and truncated, so that this holds whatever ``episodes`` is. ``progress`` is called with the
    number of episodes finished after each batch (e.g. a tqdm bar's ``update``).
    """
    episodes, num_envs = check_integer(episodes, "episodes", 1), check_integer(num_envs, "num_envs", 1)
    batch = min(int(num_envs), int(episodes))
    env = BatchedDSAEnv(config, batch, seed=seed, copy=False)
    rng = np.random.default_rng(seed)
    rewards = []
    for start in range(0, episodes, batch):
        obs = env.reset()
        policy.reset(batch, config, rng)
        throughput = np.zeros((batch, config.n_users))
        total = np.zeros(batch)
        for _ in range(config.horizon):
            actions = policy.act(obs, throughput, env)
            obs, reward, throughput, _ = env.step(actions)
            total += reward
        rewards.append(total)
        if progress is not None:
            progress(min(batch, episodes - start))
    return np.concatenate(rewards)[:episodes]
