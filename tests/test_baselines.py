import numpy as np
import pytest

from hapruned.baselines import (
    OpportunisticChannelAware,
    Oracle,
    Policy,
    SlottedAloha,
    StickyAccess,
    decentralised_bound,
    evaluate,
    max_weight_matching,
    mean_rate,
    optimal_aloha_p,
)
from hapruned.env import BatchedDSAEnv, DSAConfig
from oracle_reference import brute_force_matching, subset_dp_matching

# docs/design.md §1: independent anchors for the paper config (N=10, K=5, T=100), 2000 episodes
ANCHORS = {("aloha", "A"): 1000.6, ("aloha", "B"): 800.4, ("oracle", "A"): 2660.0, ("oracle", "B"): 2130.0}


def assert_valid_matching(weight, free, actions, value):
    used = actions[actions > 0]
    assert len(used) == len(set(used.tolist())), "a channel was given to two users"
    assert all(free[a - 1] for a in used), "a busy channel was assigned"
    assert sum(weight[n, a - 1] for n, a in enumerate(actions) if a > 0) == pytest.approx(value)


@pytest.mark.parametrize("case", range(60))
def test_matching_equals_brute_force(case):
    rng = np.random.default_rng(case)
    n_users, n_channels = rng.integers(1, 6), rng.integers(1, 6)
    # small integers make ties common, the hard case for the reconstruction
    weight = rng.integers(0, 4, size=(n_users, n_channels)).astype(float) if case % 2 else rng.random((n_users, n_channels))
    free = rng.random(n_channels) < 0.7
    actions, value = max_weight_matching(weight, free)
    assert value == pytest.approx(brute_force_matching(weight, free))
    assert_valid_matching(weight, free, actions, value)


@pytest.mark.parametrize("case", range(40))
def test_matching_equals_the_subset_dp(case):
    # sizes brute force cannot reach: either side may be the larger, some channels busy, some weights equal
    rng = np.random.default_rng(100 + case)
    n_users, n_channels = rng.integers(1, 25), rng.integers(1, 13)
    weight = rng.uniform(1.0, 7.0, size=(n_users, n_channels))
    if case % 3 == 0:
        weight = np.round(weight)
    free = rng.random(n_channels) < 0.8
    actions, value = max_weight_matching(weight, free)
    assert value == pytest.approx(subset_dp_matching(weight, free)[1], rel=1e-12)
    assert_valid_matching(weight, free, actions, value)


@pytest.mark.parametrize("case", range(10))
def test_matching_equals_scipy_at_the_scaling_study_sizes(case):
    # N = 40, K = 20 (and the transposed shape), beyond the subset DP: scipy's assignment solver decides
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(200 + case)
    shape = (40, 20) if case % 2 == 0 else (12, 30)
    weight = np.log2(1 + rng.uniform(30, 40, size=shape))
    free = rng.random(shape[1]) < 0.8
    actions, value = max_weight_matching(weight, free)
    rows, columns = linear_sum_assignment(weight[:, free], maximize=True)
    assert value == pytest.approx(weight[:, free][rows, columns].sum(), rel=1e-12)
    assert (actions > 0).sum() == min(shape[0], free.sum())  # positive weights: every free channel or user used
    assert_valid_matching(weight, free, actions, value)


@pytest.mark.parametrize("weight, free, match", [
    (-np.ones((2, 2)), None, "non-negative"), (np.full((2, 2), np.nan), None, "non-negative"),
    (np.ones(3), None, "non-negative"), (np.ones((2, 3)), np.ones(2, dtype=bool), "free"),
])
def test_matching_rejects_bad_input(weight, free, match):
    with pytest.raises(ValueError, match=match):
        max_weight_matching(weight, free)


class FixedChannels(Policy):
    """Every user plays one channel (or idles) in every slot, whatever happens."""

    def __init__(self, channels):
        self.channels = np.asarray(channels)

    def reset(self, num_envs, config, rng):
        self._actions = np.broadcast_to(self.channels, (num_envs, config.n_users))

    def act(self, obs, throughput, env):
        return self._actions


@pytest.mark.parametrize("config, channels", [
    (DSAConfig.setup("A"), [1, 2, 3, 4, 5, 0, 0, 0, 0, 0]),
    (DSAConfig.setup("B"), [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]),
    (DSAConfig(n_users=2, n_channels=3, pu_prob=(0.5, 0.1, 0.3), snr_low=1, snr_high=100), [3, 2]),  # least busy
    (DSAConfig(n_users=3, n_channels=1, snr_low=5, snr_high=5), [0, 1, 0]),
])
def test_an_orthogonal_assignment_of_the_least_busy_channels_earns_the_decentralised_bound(config, channels):
    rewards = evaluate(FixedChannels(channels), config, episodes=2000, seed=8)
    bound = decentralised_bound(config)
    print(f"bound {bound:.1f}, fixed channels {rewards.mean():.1f} ± {rewards.std() / np.sqrt(2000):.1f}")
    assert abs(rewards.mean() - bound) <= 6 * rewards.std() / np.sqrt(2000) + 1e-9 * bound


def test_decentralised_bound_of_the_paper_setups_and_mean_rate():
    # docs/design.md §1: 2582.6 in setup A, 2066.1 in setup B
    assert decentralised_bound(DSAConfig.setup("A")) == pytest.approx(2582.6, abs=0.05)
    assert decentralised_bound(DSAConfig.setup("B")) == pytest.approx(2066.1, abs=0.05)
    assert mean_rate(1, 100) == pytest.approx(np.mean(np.log2(1 + np.linspace(1, 100, 1_000_001))), rel=1e-6)
    assert mean_rate(7, 7) == np.log2(8)
    with pytest.raises(TypeError, match="DSAConfig"):
        decentralised_bound({"n_users": 2})


@pytest.mark.parametrize("setup", ["A", "B"])
@pytest.mark.parametrize("scheme", ["aloha", "oracle"])
def test_paper_anchors(scheme, setup):
    policy = SlottedAloha(p=0.5) if scheme == "aloha" else Oracle()
    rewards = evaluate(policy, DSAConfig.setup(setup), episodes=2000, seed=1)
    anchor = ANCHORS[(scheme, setup)]
    print(f"{scheme} {setup}: {rewards.mean():.1f} vs {anchor}")
    assert abs(rewards.mean() - anchor) < 0.01 * anchor


@pytest.mark.parametrize("observe_snr", [False, True])
@pytest.mark.parametrize("setup", ["A", "B"])
def test_oracle_beats_every_scheme_on_every_episode(setup, observe_snr):
    config = DSAConfig.setup(setup, observe_snr=observe_snr)
    oracle = evaluate(Oracle(), config, episodes=200, seed=3, num_envs=100)
    for policy in (SlottedAloha(), OpportunisticChannelAware(), StickyAccess()):
        rewards = evaluate(policy, config, episodes=200, seed=3, num_envs=100)
        assert np.all(oracle >= rewards - 1e-9), type(policy).__name__


@pytest.mark.parametrize("setup", ["A", "B"])
def test_sticky_beats_aloha_and_oca(setup):
    config = DSAConfig.setup(setup)
    sticky = evaluate(StickyAccess(), config, episodes=300, seed=4).mean()
    aloha = evaluate(SlottedAloha(), config, episodes=300, seed=4).mean()
    oca = evaluate(OpportunisticChannelAware(), config, episodes=300, seed=4).mean()
    print(f"setup {setup}: sticky {sticky:.1f}, aloha {aloha:.1f}, oca {oca:.1f}")
    assert sticky > 1.3 * max(aloha, oca)


def test_oca_beats_aloha_when_channels_differ():
    # one channel far better for every user: learning the channel values pays off
    config = DSAConfig(n_users=1, n_channels=4, snr_low=1.0, snr_high=1000.0)
    oca = evaluate(OpportunisticChannelAware(), config, episodes=200, seed=5).mean()
    aloha = evaluate(SlottedAloha(), config, episodes=200, seed=5).mean()
    assert oca > 1.1 * aloha


@pytest.mark.parametrize("policy", [SlottedAloha, OpportunisticChannelAware, StickyAccess, Oracle])
def test_deterministic_for_a_seed(policy):
    config = DSAConfig.setup("B", n_users=4, n_channels=3, horizon=20)
    first = evaluate(policy(), config, episodes=30, seed=7, num_envs=8)
    assert np.array_equal(first, evaluate(policy(), config, episodes=30, seed=7, num_envs=8))
    assert not np.array_equal(first, evaluate(policy(), config, episodes=30, seed=8, num_envs=8))


def test_partial_last_batch_keeps_the_same_episodes():
    config = DSAConfig(n_users=4, n_channels=3, horizon=20)
    seven = evaluate(StickyAccess(), config, episodes=7, seed=2, num_envs=3)
    six = evaluate(StickyAccess(), config, episodes=6, seed=2, num_envs=3)
    assert seven.shape == (7,)
    assert np.array_equal(seven[:6], six)


@pytest.mark.parametrize("n_users,n_channels", [(10, 5), (3, 5), (7, 2), (1, 1), (40, 3)])
def test_optimal_aloha_p_maximises_expected_acks(n_users, n_channels):
    grid = np.linspace(1e-4, 1.0, 100_001)
    q = grid / n_channels
    expected_acks = n_channels * n_users * q * (1 - q) ** (n_users - 1)
    assert optimal_aloha_p(n_users, n_channels) == pytest.approx(grid[np.argmax(expected_acks)], abs=1e-3)


def _play(policy, config, num_envs, seed):
    """Actions and feedback of one batch of episodes: int64[T, B, N] each."""
    env = BatchedDSAEnv(config, num_envs, seed=seed)
    obs = env.reset()
    policy.reset(num_envs, config, np.random.default_rng(seed))
    throughput = np.zeros((num_envs, config.n_users))
    actions, feedback = [], []
    for _ in range(config.horizon):
        action = policy.act(obs, throughput, env)
        obs, _, throughput, _ = env.step(action)
        actions.append(action)
        feedback.append(obs[..., 1])
    return np.array(actions), np.array(feedback), env


def test_aloha_transmits_with_probability_p_on_uniform_channels():
    config = DSAConfig(n_users=6, n_channels=3, horizon=50)
    actions, _, _ = _play(SlottedAloha(p=0.3), config, num_envs=200, seed=0)
    assert np.mean(actions > 0) == pytest.approx(0.3, abs=0.01)
    per_channel = np.bincount(actions[actions > 0], minlength=4)[1:] / np.sum(actions > 0)
    assert np.allclose(per_channel, 1 / 3, atol=0.01)


def test_oca_settles_on_the_best_channel_of_a_lone_user():
    config = DSAConfig(n_users=1, n_channels=4, horizon=100, snr_low=1.0, snr_high=100.0)
    actions, _, env = _play(OpportunisticChannelAware(explore=0.05), config, num_envs=300, seed=1)
    best = np.argmax(env.snr[:, 0, :], axis=-1) + 1
    assert np.mean(actions[-50:, :, 0] == best) > 0.9


def test_oca_with_observed_snr_knows_a_lone_users_best_channel_after_one_try_of_each():
    config = DSAConfig(n_users=1, n_channels=4, horizon=30, snr_low=1.0, snr_high=100.0, observe_snr=True)
    actions, _, env = _play(OpportunisticChannelAware(explore=0.0), config, num_envs=200, seed=1)
    assert np.all(np.sort(actions[:4, :, 0], axis=0) == np.arange(1, 5)[:, None])  # each channel once
    best = np.argmax(env.snr[:, 0, :], axis=-1) + 1
    np.testing.assert_array_equal(actions[4:, :, 0], np.broadcast_to(best, (26, 200)))


def test_oca_learns_each_channels_rate_from_collisions_too():
    # two users collide on channel 1: no ACK, yet each now knows what channel 1 would give it
    config = DSAConfig(n_users=2, n_channels=2, horizon=3, snr_low=1.0, snr_high=100.0, observe_snr=True)
    policy = OpportunisticChannelAware(p=1.0, explore=0.0)
    env = BatchedDSAEnv(config, 1, seed=0)
    env.reset()
    policy.reset(1, config, np.random.default_rng(0))
    obs, _, throughput, _ = env.step(np.array([[1, 1]]))
    assert np.all(obs[..., 1] == -1) and np.all(throughput == 0)
    policy.act(obs, throughput, env)
    np.testing.assert_array_equal(policy._known_rate[0, :, 0], np.log2(1 + env.snr[0, :, 0]))
    np.testing.assert_array_equal(policy._known_rate[0, :, 1], np.log2(101.0))  # channel 2: not tried yet


def test_oca_earns_more_when_it_observes_the_snr():
    config = DSAConfig(n_users=2, n_channels=3, horizon=50, snr_low=1.0, snr_high=100.0)
    blind = evaluate(OpportunisticChannelAware(), config, episodes=300, seed=6).mean()
    observing = evaluate(OpportunisticChannelAware(), config.replace(observe_snr=True), episodes=300, seed=6).mean()
    print(f"oca {blind:.1f}, with the SNR observed {observing:.1f}")
    assert observing > 1.2 * blind


def test_oca_tries_every_channel_first_because_its_estimates_start_optimistic():
    config = DSAConfig(n_users=1, n_channels=3, horizon=3)
    actions, _, _ = _play(OpportunisticChannelAware(explore=0.0), config, num_envs=50, seed=4)
    assert np.all(np.sort(actions[:, :, 0], axis=0) == np.array([[1], [2], [3]]))


def test_sticky_users_end_alone_on_their_channels_when_there_is_room():
    config = DSAConfig(n_users=3, n_channels=5, horizon=100)
    _, feedback, _ = _play(StickyAccess(), config, num_envs=200, seed=2)
    assert np.mean(feedback[-10:] == 1) > 0.95


@pytest.mark.parametrize("setup", ["A", "B"])
def test_sticky_keeps_a_channel_after_its_first_ack(setup):
    actions, feedback, _ = _play(StickyAccess(), DSAConfig.setup(setup), num_envs=100, seed=6)
    acked_before = np.cumsum(feedback == 1, axis=0) > 0  # [T, B, N]
    first_channel = np.take_along_axis(actions, np.argmax(feedback == 1, axis=0)[None], axis=0)[0]
    kept = actions[1:] == first_channel[None]
    assert acked_before.any()
    assert np.all(kept[acked_before[:-1]])


def test_oracle_fills_every_free_channel():
    config = DSAConfig.setup("B")
    actions, feedback, _ = _play(Oracle(), config, num_envs=50, seed=3)
    assert not np.any(feedback == -1) and not np.any(feedback == -2)
    assert np.all((actions > 0).sum(-1) == (feedback == 1).sum(-1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: SlottedAloha(p=0.0),
        lambda: SlottedAloha(p=1.5),
        lambda: OpportunisticChannelAware(explore=-0.1),
        lambda: OpportunisticChannelAware(step_size=0.0),
        lambda: StickyAccess(release_nack=2.0),
        lambda: StickyAccess(backoff="0.5"),
    ],
)
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError, match="must be"):
        make()


@pytest.mark.parametrize("kwargs", [{"episodes": 0}, {"episodes": 2.5}, {"episodes": 3, "num_envs": 0}])
def test_evaluate_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        evaluate(SlottedAloha(), DSAConfig(), **kwargs)
