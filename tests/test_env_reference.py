"""The batched numba environment against the plain NumPy reference, driven by the same random draws.

The batched environment runs as usual; its SNR matrix at reset and its primary-user state before
each step are handed to one ReferenceDSAEnv per environment. Observations, per-user throughputs,
observed rates and done flags must be identical. The shared reward is compared within a rounding bound: both sum
the same (bit-identical) per-user throughputs, the kernel in user order and NumPy pairwise, and two
orders of summing N non-negative terms differ by at most about N ulps of the total.

With ``observe_snr`` the feature the networks read from the batched environment's observed rates must
be the reference's SNR of each transmission not blocked by a primary user, scaled over the SNR range.
"""

import numpy as np
import pytest
from hapruned.env import BatchedDSAEnv, DSAConfig, encode_env_observations
from hapruned.env.reference import ReferenceDSAEnv
from hypothesis import given, settings
from hypothesis import strategies as st


def reference_snr_feature(reference, obs):
    """The SNR feature of docs/design.md §1 from the reference's SNR matrix and observations (N, 2)."""
    cfg = reference.config
    action, code = obs[:, 0], obs[:, 1]
    snr = reference.snr[np.arange(cfg.n_users), np.maximum(action - 1, 0)]
    width = cfg.snr_high - cfg.snr_low
    quantile = np.clip((snr - cfg.snr_low) / width, 0, 1) if width > 0 else np.ones(cfg.n_users)
    return np.where((action > 0) & (code != -2), quantile, 0.0)


def drive_both(config, num_envs, seed, episodes, action_seed):
    """Play ``episodes`` episodes in both implementations; returns how often each feedback code occurred."""
    env = BatchedDSAEnv(config, num_envs, seed=seed)
    references = [ReferenceDSAEnv(config) for _ in range(num_envs)]
    rng = np.random.default_rng(action_seed)
    codes_seen = {}
    for _ in range(episodes):
        obs = env.reset()
        for b, reference in enumerate(references):
            np.testing.assert_array_equal(reference.reset(snr=env.snr[b]), obs[b])
            np.testing.assert_array_equal(reference.observed_rate, env.observed_rate[b])
        # mostly idle users in some episodes, crowded channels in others
        idle_prob = rng.random()
        for _ in range(config.horizon):
            channels = rng.integers(1, config.n_actions, size=(num_envs, config.n_users))
            actions = np.where(rng.random((num_envs, config.n_users)) < idle_prob, 0, channels)
            pu_busy = env.pu_busy.copy()  # the state of the slot about to be played
            obs, reward, throughput, done = env.step(actions)
            for b, reference in enumerate(references):
                ref_obs, ref_reward, ref_throughput, ref_done = reference.step(actions[b], pu_busy=pu_busy[b])
                np.testing.assert_array_equal(obs[b], ref_obs)
                np.testing.assert_array_equal(throughput[b], ref_throughput)
                np.testing.assert_array_equal(env.observed_rate[b], reference.observed_rate)
                np.testing.assert_array_equal(env.difference_reward[b], reference.difference_reward)
                assert done[b] == ref_done
                if config.observe_snr:
                    # the feature recovers the SNR from the rate: a few ulps of 1 + snr, over the range's width
                    width = config.snr_high - config.snr_low
                    tolerance = 1e-6 + (1e-14 * (1 + config.snr_high) / width if width > 0 else 0)
                    features = encode_env_observations(config, obs[b], env.observed_rate[b])
                    expected = reference_snr_feature(reference, ref_obs)
                    np.testing.assert_allclose(features[:, -1], expected, atol=tolerance)
                bound = config.n_users * np.finfo(np.float64).eps * ref_reward
                assert abs(reward[b] - ref_reward) <= bound, (reward[b], ref_reward)
            for code in np.unique(obs[..., 1]).tolist():
                codes_seen[code] = codes_seen.get(code, 0) + 1
        assert done.all()
    return codes_seen


@pytest.mark.parametrize("observe_snr", [False, True])
@pytest.mark.parametrize("setup", ["A", "B"])
def test_paper_setups_match_the_reference(setup, observe_snr):
    config = DSAConfig.setup(setup, observe_snr=observe_snr)
    codes_seen = drive_both(config, num_envs=6, seed=2, episodes=2, action_seed=3)
    # the comparison covered every outcome the setup can produce
    assert set(codes_seen) == ({0, 1, -1} if setup == "A" else {0, 1, -1, -2})


@st.composite
def configs(draw):
    n_channels = draw(st.integers(1, 8))
    probability = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
    pu_prob = draw(st.one_of(probability, st.lists(probability, min_size=n_channels, max_size=n_channels)))
    snr_low = draw(st.floats(1e-3, 1e3))
    snr_width = draw(st.one_of(st.just(0.0), st.floats(0.0, 1e3)))
    return DSAConfig(
        n_users=draw(st.integers(1, 12)),
        n_channels=n_channels,
        horizon=draw(st.integers(1, 12)),
        snr_low=snr_low,
        snr_high=snr_low + snr_width,
        pu_prob=pu_prob,
        observe_snr=draw(st.booleans()),
    )


@settings(max_examples=60, deadline=None)
@given(
    config=configs(),
    num_envs=st.integers(1, 5),
    seed=st.integers(0, 2**63),
    action_seed=st.integers(0, 2**32),
)
def test_random_configs_match_the_reference(config, num_envs, seed, action_seed):
    drive_both(config, num_envs, seed, episodes=2, action_seed=action_seed)


def test_reference_draws_its_own_randomness_by_the_rules():
    config = DSAConfig(n_users=2, n_channels=3, horizon=500, snr_low=5.0, snr_high=6.0, pu_prob=(0.0, 0.5, 1.0))
    reference = ReferenceDSAEnv(config, seed=0)
    reference.reset()
    assert reference.snr.shape == (2, 3) and np.all((reference.snr >= 5.0) & (reference.snr < 6.0))
    feedback = []
    for _ in range(config.horizon):
        obs, reward, throughput, done = reference.step([1, 2])  # one user alone on each of channels 1 and 2
        feedback.append(obs[:, 1])
    feedback = np.asarray(feedback)
    assert done and np.all(feedback[:, 0] == 1)  # channel 1 is never occupied
    assert abs((feedback[:, 1] == -2).mean() - 0.5) < 6 * np.sqrt(0.25 / config.horizon)
    with pytest.raises(RuntimeError, match="reset"):
        reference.step([0, 0])


@pytest.mark.parametrize(
    "actions, error", [([0, 4], ValueError), ([-1, 0], ValueError), ([0], ValueError), ([0.0, 1.0], TypeError)]
)
def test_reference_rejects_bad_actions(actions, error):
    reference = ReferenceDSAEnv(DSAConfig(n_users=2, n_channels=3))
    reference.reset()
    with pytest.raises(error, match="actions"):
        reference.step(actions)
