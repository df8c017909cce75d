"""The batched environment's own contract: random streams, input validation, configuration, encoder.

Agreement with the plain NumPy rules is tested in test_env_reference.py.
"""

import numba
import numpy as np
import pytest

from hapruned.env import (FEEDBACK_CODES, BatchedDSAEnv, DSAConfig, batched, encode_env_observations,
                          encode_observations, observation_size, snr_quantile)
from hapruned.env.reference import ReferenceDSAEnv


def play_episode(env, actions, seed=None):
    """Reset (with ``seed``), then play ``actions[T, B, N]``; returns the draws and outputs stacked over time."""
    env.reset(seed=seed)
    trace = {"snr": env.snr.copy(), "pu": [], "obs": [], "reward": [], "throughput": []}
    for step_actions in actions:
        trace["pu"].append(env.pu_busy.copy())
        obs, reward, throughput, _ = env.step(step_actions)
        trace["obs"].append(np.array(obs))
        trace["reward"].append(np.array(reward))
        trace["throughput"].append(np.array(throughput))
    return {key: np.asarray(value) for key, value in trace.items()}


def random_actions(config, num_envs, seed):
    """``int64[T, B, N]`` uniform over 0..K, idle included."""
    return np.random.default_rng(seed).integers(0, config.n_actions, size=(config.horizon, num_envs, config.n_users))


def assert_same_trace(first, second):
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@pytest.fixture
def restore_numba_threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


# ---------------------------------------------------------------------------- random streams


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba was started with a single thread")
def test_same_seed_same_trajectories_serial_and_parallel(restore_numba_threads, monkeypatch):
    config = DSAConfig.setup("B", horizon=20)
    actions = random_actions(config, 64, seed=1)
    traces = []
    # 64 environments run serially at the default threshold; a threshold of 0 runs them in parallel
    for threads, min_slots in ((1, batched.PARALLEL_MIN_SLOTS), (2, 0), (1, 0)):
        numba.set_num_threads(threads)
        monkeypatch.setattr(batched, "PARALLEL_MIN_SLOTS", min_slots)
        traces.append(play_episode(BatchedDSAEnv(config, 64, seed=123), actions))
    assert_same_trace(traces[0], traces[1])
    assert_same_trace(traces[0], traces[2])


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba was started with a single thread")
def test_small_batches_run_on_the_calling_thread(restore_numba_threads):
    numba.set_num_threads(2)
    slots = batched.PARALLEL_MIN_SLOTS
    assert not batched._parallel(slots // 10 - 1, 10) and batched._parallel(slots // 10 + 1, 10)
    numba.set_num_threads(1)
    assert not batched._parallel(slots, 10)


def test_different_seeds_and_different_envs_differ():
    config = DSAConfig.setup("B", horizon=10)
    actions = random_actions(config, 8, seed=0)
    first = play_episode(BatchedDSAEnv(config, 8, seed=1), actions)
    second = play_episode(BatchedDSAEnv(config, 8, seed=2), actions)
    assert not np.array_equal(first["snr"], second["snr"])
    assert not np.array_equal(first["pu"], second["pu"])
    # the environments of one batch have their own streams
    assert len({first["snr"][b].tobytes() for b in range(8)}) == 8


def test_reset_seed_restarts_the_stream_and_plain_reset_continues_it():
    config = DSAConfig.setup("B", horizon=10)
    actions = random_actions(config, 4, seed=0)
    env = BatchedDSAEnv(config, 4, seed=0)
    first_episode = play_episode(env, actions)
    second_episode = play_episode(env, actions)  # reset() without a seed continues the streams
    assert not np.array_equal(first_episode["snr"], second_episode["snr"])

    fresh = BatchedDSAEnv(config, 4, seed=7)
    assert_same_trace(play_episode(fresh, actions), play_episode(env, actions, seed=7))

    # a reset(seed) mid-episode gives the same trajectory as a fresh environment with that seed
    env.reset()
    env.step(actions[0])
    assert_same_trace(first_episode, play_episode(env, actions, seed=0))


def test_an_environment_stream_depends_only_on_seed_and_index():
    config = DSAConfig.setup("B", horizon=10)
    actions = random_actions(config, 8, seed=3)
    small = play_episode(BatchedDSAEnv(config, 3, seed=5), actions[:, :3])
    large = play_episode(BatchedDSAEnv(config, 8, seed=5), actions)
    for key in small:
        np.testing.assert_array_equal(small[key], large[key][:, :3] if key != "snr" else large[key][:3], err_msg=key)


def test_snr_is_uniform_on_the_configured_range():
    low, high = 30.0, 40.0
    env = BatchedDSAEnv(DSAConfig(snr_low=low, snr_high=high), 2000, seed=11)
    env.reset()
    snr = env.snr.ravel()  # 100,000 draws
    assert snr.min() >= low and snr.max() < high
    # mean of U[low, high]: standard error (high - low) / sqrt(12 n); 6 standard errors never fail by chance
    assert abs(snr.mean() - (low + high) / 2) < 6 * (high - low) / np.sqrt(12 * snr.size)
    # each tenth of the range holds a tenth of the draws (binomial, 6 standard deviations)
    counts = np.histogram(snr, bins=10, range=(low, high))[0]
    assert np.all(np.abs(counts - snr.size / 10) < 6 * np.sqrt(snr.size * 0.1 * 0.9)), counts
    # consecutive draws are uncorrelated
    assert abs(np.corrcoef(snr[:-1], snr[1:])[0, 1]) < 6 / np.sqrt(snr.size)


def test_primary_users_occupy_channels_with_pu_prob_independently():
    probs = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    config = DSAConfig(n_users=2, n_channels=5, horizon=100, pu_prob=tuple(probs))
    env = BatchedDSAEnv(config, 1000, seed=21)
    env.reset()
    busy = []
    idle = np.zeros((1000, 2), dtype=np.int64)
    for _ in range(config.horizon):
        busy.append(env.pu_busy.copy())
        env.step(idle)
    busy = np.asarray(busy)  # [T, B, K], 100,000 slots per channel
    slots = busy.shape[0] * busy.shape[1]
    frequency = busy.mean(axis=(0, 1))
    bound = 6 * np.sqrt(probs * (1 - probs) / slots)
    assert np.all(np.abs(frequency - probs) <= bound), frequency  # exact for p = 0 and p = 1
    both = (busy[..., 1] & busy[..., 2]).mean()  # two channels in the same slot
    assert abs(both - 0.05) < 6 * np.sqrt(0.05 * 0.95 / slots)
    again = (busy[1:, :, 2] & busy[:-1, :, 2]).mean()  # one channel in consecutive slots
    assert abs(again - 0.25) < 6 * np.sqrt(0.25 * 0.75 / (slots - busy.shape[1]))


@pytest.mark.parametrize("dtype", [np.int32, np.uint8])
def test_any_integer_action_dtype_gives_the_same_trajectory(dtype):
    config = DSAConfig.setup("B", horizon=5)
    actions = random_actions(config, 3, seed=4)
    expected = play_episode(BatchedDSAEnv(config, 3, seed=1), actions)
    assert_same_trace(expected, play_episode(BatchedDSAEnv(config, 3, seed=1), actions.astype(dtype)))


def test_copy_false_returns_the_buffers_with_the_same_values():
    config = DSAConfig.setup("B", horizon=5)
    actions = random_actions(config, 4, seed=2)
    copied = BatchedDSAEnv(config, 4, seed=9, copy=True)
    shared = BatchedDSAEnv(config, 4, seed=9, copy=False)
    assert np.array_equal(copied.reset(), shared.reset())
    previous = None
    for step_actions in actions:
        expected = copied.step(step_actions)
        got = shared.step(step_actions)
        for a, b in zip(expected, got):
            np.testing.assert_array_equal(a, b)
        if previous is not None:
            assert all(a is b for a, b in zip(previous, got))
        previous = got


@pytest.mark.parametrize("setup, anchor", [("A", 1000.6), ("B", 800.4)])
def test_slotted_aloha_matches_its_closed_form_and_the_paper_anchor(setup, anchor):
    """Each user transmits w.p. p on a uniform channel, so
    E[episode reward] = T N p (1 - p/K)^(N-1) (1 - pi) E[log2(1 + snr)]."""
    config = DSAConfig.setup(setup)
    n_users, n_channels, p, episodes = config.n_users, config.n_channels, 0.5, 2000
    env = BatchedDSAEnv(config, episodes, seed=0, copy=False)
    env.reset()
    rng = np.random.default_rng(1)
    totals = np.zeros(episodes)
    for _ in range(config.horizon):
        channels = rng.integers(1, n_channels + 1, size=(episodes, n_users))
        totals += env.step(np.where(rng.random((episodes, n_users)) < p, channels, 0))[1]
    low, high = config.snr_low, config.snr_high
    antiderivative = lambda x: ((1 + x) * np.log(1 + x) - (1 + x)) / np.log(2)  # of log2(1 + x)
    mean_rate = (antiderivative(high) - antiderivative(low)) / (high - low)
    success = p * (1 - p / n_channels) ** (n_users - 1) * (1 - config.pu_probs[0])
    expected = config.horizon * n_users * success * mean_rate
    assert abs(totals.mean() - expected) < 6 * totals.std() / np.sqrt(episodes), (totals.mean(), expected)
    assert abs(totals.mean() - anchor) < 0.01 * anchor  # docs/design.md §1 sanity anchor


def test_observed_rate_is_the_rate_of_every_transmission_no_primary_user_blocked():
    config = DSAConfig.setup("B", n_users=6, n_channels=3, horizon=40)  # crowded: NACKs, blocks and idle users
    env = BatchedDSAEnv(config, 20, seed=3, copy=False)
    outcomes = set()
    for episode in range(2):
        env.reset()
        assert np.all(env.observed_rate == 0)  # also after an episode that ended with transmissions
        for step_actions in random_actions(config, 20, seed=episode):
            obs, _, throughput, _ = env.step(step_actions)
            action, code = obs[..., 0], obs[..., 1]
            snr = np.take_along_axis(env.snr, np.maximum(action - 1, 0)[..., None], axis=-1)[..., 0]
            expected = np.where((action > 0) & (code != -2), np.log2(1 + snr), 0.0)
            np.testing.assert_array_equal(env.observed_rate, expected)
            np.testing.assert_array_equal(throughput, np.where(code == 1, env.observed_rate, 0.0))
            outcomes.update(code[env.observed_rate > 0].tolist())
    assert outcomes == {1, -1}  # collided transmissions observe their channel's rate too


# ---------------------------------------------------------------------------- validation


@pytest.fixture
def env():
    environment = BatchedDSAEnv(DSAConfig.setup("B", n_users=3, n_channels=4, horizon=6), 2, seed=4)
    environment.reset()
    return environment


def snapshot(environment):
    return {
        "t": environment.t,
        "snr": environment.snr.copy(),
        "pu_busy": environment.pu_busy.copy(),
        "states": environment._states.copy(),
        "obs": environment._obs.copy(),
    }


@pytest.mark.parametrize(
    "actions, error, match",
    [
        (np.zeros((2, 4), dtype=np.int64), ValueError, "shape"),
        (np.zeros((3, 2), dtype=np.int64), ValueError, "shape"),
        (np.zeros(3, dtype=np.int64), ValueError, "shape"),
        (np.zeros((2, 3, 1), dtype=np.int64), ValueError, "shape"),
        (np.zeros((2, 3)), TypeError, "integers"),
        (np.zeros((2, 3), dtype=bool), TypeError, "integers"),
        ([[0, 1, 2], [1, 2, 5]], ValueError, r"0\.\.4"),
        ([[0, -1, 2], [1, 2, 3]], ValueError, r"0\.\.4"),
    ],
)
def test_bad_actions_are_rejected_and_change_nothing(env, actions, error, match):
    twin = BatchedDSAEnv(env.config, 2, seed=4)
    twin.reset()
    before = snapshot(env)
    with pytest.raises(error, match=match):
        env.step(actions)
    after = snapshot(env)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    # the rejected call lost nothing: the trajectory goes on exactly as in an untouched twin
    good = np.array([[0, 1, 4], [2, 2, 3]])
    for expected, got in zip(twin.step(good), env.step(good)):
        np.testing.assert_array_equal(expected, got)


def test_step_before_reset_and_after_the_end_raise():
    config = DSAConfig(horizon=2)
    environment = BatchedDSAEnv(config, 1)
    idle = np.zeros((1, config.n_users), dtype=np.int64)
    with pytest.raises(RuntimeError, match="reset"):
        environment.step(idle)
    environment.reset()
    assert not environment.step(idle)[3].any()
    assert environment.step(idle)[3].all()
    with pytest.raises(RuntimeError, match="reset"):
        environment.step(idle)
    environment.reset()
    assert environment.t == 0
    environment.step(idle)


@pytest.mark.parametrize("num_envs", [0, -1, 1.5, True, "2"])
def test_bad_num_envs(num_envs):
    with pytest.raises(ValueError, match="num_envs"):
        BatchedDSAEnv(DSAConfig(), num_envs)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", None])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        BatchedDSAEnv(DSAConfig(), 2, seed=seed)
    environment = BatchedDSAEnv(DSAConfig(), 2)
    if seed is not None:  # reset(None) is the legal "keep the stream"
        with pytest.raises(ValueError, match="seed"):
            environment.reset(seed=seed)


def test_config_must_be_a_dsa_config():
    with pytest.raises(TypeError, match="DSAConfig"):
        BatchedDSAEnv({"n_users": 2}, 1)


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_users", 0), ("n_users", -2), ("n_users", 2.0), ("n_users", True), ("n_users", "3"),
        ("n_channels", 0), ("n_channels", 1.5),
        ("horizon", 0), ("horizon", None),
        ("snr_low", 0.0), ("snr_low", -1.0), ("snr_low", float("nan")), ("snr_low", float("inf")), ("snr_low", "30"),
        ("snr_high", 29.0), ("snr_high", float("nan")), ("snr_high", float("inf")), ("snr_high", None),
        ("pu_prob", -0.1), ("pu_prob", 1.1), ("pu_prob", float("nan")), ("pu_prob", (0.1, 0.2)),
        ("pu_prob", ((0.1,) * 5,) * 2), ("pu_prob", "abc"), ("pu_prob", (0.1, 0.2, 0.3, 0.4, 2.0)),
        ("observe_snr", 1), ("observe_snr", "true"), ("observe_snr", None),
    ],
)
def test_bad_config_field_raises_value_error_naming_it(field, value):
    with pytest.raises(ValueError, match=f"DSAConfig.{field}"):
        DSAConfig(**{field: value})


def test_config_presets_and_normal_forms():
    assert DSAConfig.setup("A").pu_probs.tolist() == [0.0] * 5
    assert DSAConfig.setup("B").pu_probs.tolist() == [0.2] * 5
    assert DSAConfig.setup("B", n_channels=3).pu_probs.shape == (3,)
    assert DSAConfig.setup("A").n_actions == 6
    with pytest.raises(ValueError, match="setup"):
        DSAConfig.setup("C")
    per_channel = DSAConfig(n_channels=3, pu_prob=[0.1, 0.2, 0.3])
    assert per_channel.pu_prob == (0.1, 0.2, 0.3)  # a tuple, so configs stay hashable
    assert hash(per_channel) == hash(DSAConfig(n_channels=3, pu_prob=np.array([0.1, 0.2, 0.3])))
    assert DSAConfig(n_users=np.int64(4), snr_low=30).n_users == 4
    assert DSAConfig(pu_prob=0).replace(n_users=3).pu_prob == 0.0


# ---------------------------------------------------------------------------- encoder

FEEDBACK_SLOT = {0: 0, 1: 1, -1: 2, -2: 3}  # docs/design.md §1: one-hot(o) over (idle, ACK, NACK, PU)


def test_encoder_one_hot_layout():
    n_channels = 3
    pairs = [(a, o) for a in range(n_channels + 1) for o in FEEDBACK_SLOT]
    obs = np.array(pairs, dtype=np.int64)
    encoded = encode_observations(obs, n_channels)
    assert encoded.dtype == np.float32 and encoded.shape == (len(pairs), observation_size(n_channels)) == (16, 8)
    for (action, feedback), row in zip(pairs, encoded):
        expected = np.zeros(n_channels + 5, dtype=np.float32)
        expected[action] = 1
        expected[n_channels + 1 + FEEDBACK_SLOT[feedback]] = 1
        np.testing.assert_array_equal(row, expected, err_msg=f"a={action}, o={feedback}")
    assert FEEDBACK_CODES == tuple(FEEDBACK_SLOT)


def test_encoder_batched_shapes_and_out_buffer():
    config = DSAConfig.setup("B", horizon=3)
    environment = BatchedDSAEnv(config, 5, seed=0)
    environment.reset()
    obs = environment.step(random_actions(config, 5, seed=0)[0])[0]
    expected = encode_observations(obs, config.n_channels)
    assert expected.shape == (5, config.n_users, config.n_channels + 5)
    # decoding recovers the observation
    np.testing.assert_array_equal(expected[..., : config.n_actions].argmax(-1), obs[..., 0])
    codes = np.array(FEEDBACK_CODES)[expected[..., config.n_actions :].argmax(-1)]
    np.testing.assert_array_equal(codes, obs[..., 1])

    out = np.full(expected.shape, 7.0, dtype=np.float32)  # stale contents must be cleared
    result = encode_observations(obs, config.n_channels, out=out)
    assert result is out
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="out"):
        encode_observations(obs, config.n_channels, out=np.zeros(expected.shape, dtype=np.float64))
    with pytest.raises(ValueError, match="out"):
        encode_observations(obs, config.n_channels, out=np.zeros((5, 1, 10), dtype=np.float32))


@pytest.mark.parametrize(
    "obs, n_channels, match",
    [
        (np.zeros((2, 3), dtype=np.int64), 3, "last axis"),
        (np.zeros((2, 2)), 3, "integers"),
        (np.array([[4, 0]]), 3, r"0\.\.3"),
        (np.array([[-1, 0]]), 3, r"0\.\.3"),
        (np.array([[1, 2]]), 3, "feedback"),
        (np.array([[1, -3]]), 3, "feedback"),
        (np.array([[1, 1]]), 0, "n_channels"),
    ],
)
def test_encoder_rejects_bad_input(obs, n_channels, match):
    with pytest.raises(ValueError, match=match):
        encode_observations(obs, n_channels)


def test_snr_quantile_scales_the_observed_snr_over_its_range():
    low, high = 1.0, 100.0
    snr = np.array([1.0, 25.75, 50.5, 100.0, 0.5, 400.0])
    np.testing.assert_allclose(snr_quantile(np.log2(1 + snr), low, high), [0, 0.25, 0.5, 1, 0, 1], atol=1e-6)
    assert snr_quantile(np.log2(1 + snr), low, high).dtype == np.float32
    assert snr_quantile(np.zeros((2, 3)), low, high).tolist() == [[0.0] * 3] * 2  # idle or blocked
    assert snr_quantile(np.array([0.0, np.log2(31.0)]), 30.0, 30.0).tolist() == [0.0, 1.0]  # one SNR: 1 if seen
    for bad in (np.array([-1.0]), np.array([np.nan]), np.array([np.inf])):
        with pytest.raises(ValueError, match="rate must be"):
            snr_quantile(bad, low, high)
    with pytest.raises(ValueError, match="snr_high"):
        snr_quantile(np.zeros(2), 5.0, 4.0)


def test_encoder_with_the_snr_feature():
    config = DSAConfig.setup("B", n_users=4, n_channels=3, horizon=30, observe_snr=True, snr_low=1, snr_high=100)
    assert observation_size(3, observe_snr=True) == 9 and observation_size(3) == 8
    env = BatchedDSAEnv(config, 6, seed=2, copy=False)
    env.reset()
    for step_actions in random_actions(config, 6, seed=1):
        obs, _, _, _ = env.step(step_actions)
        encoded = encode_env_observations(config, obs, env.observed_rate)
        assert encoded.shape == (6, 4, 9) and encoded.dtype == np.float32
        np.testing.assert_array_equal(encoded[..., :8], encode_observations(obs, 3))  # the one-hots come first
        quantile = (np.exp2(env.observed_rate) - 1 - 1) / 99
        np.testing.assert_allclose(encoded[..., 8], np.where(env.observed_rate > 0, quantile, 0), atol=1e-6)
    # without observe_snr the rate is ignored; out buffers of the wider shape are filled the same way
    plain = config.replace(observe_snr=False)
    np.testing.assert_array_equal(encode_env_observations(plain, obs, env.observed_rate), encode_observations(obs, 3))
    out = np.full((6, 4, 9), 7.0, dtype=np.float32)
    assert encode_env_observations(config, obs, env.observed_rate, out=out) is out
    np.testing.assert_array_equal(out, encoded)


@pytest.mark.parametrize("feature, match", [
    (np.zeros(3), "shape"), (np.zeros((2, 1)), "shape"), (np.full(2, 1.5), r"\[0, 1\]"),
    (np.full(2, -0.1), r"\[0, 1\]"), (np.full(2, np.nan), r"\[0, 1\]"),
])
def test_encoder_rejects_a_bad_snr_feature(feature, match):
    with pytest.raises(ValueError, match=f"snr_feature.*{match}"):
        encode_observations(np.zeros((2, 2), dtype=np.int64), 3, snr_feature=feature)


def test_rng_states_round_trip_replays_the_episode():
    config = DSAConfig.setup("B")
    first = BatchedDSAEnv(config, 3, seed=11)
    saved = first.rng_states
    first.reset()
    actions = np.ones((3, config.n_users), dtype=np.int64)
    expected = first.step(actions)
    second = BatchedDSAEnv(config, 3, seed=99)
    second.rng_states = saved
    second.reset()
    for got, want in zip(second.step(actions), expected):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="rng_states"):
        second.rng_states = saved[:2]


@pytest.mark.parametrize("setup", ["A", "B"])
def test_difference_reward_is_the_team_reward_minus_the_one_had_the_user_stayed_idle(setup):
    """Brute force: replay every slot once per user with that user idle (same SNRs and primary users) in the
    reference environment and compare the team rewards; crowded, sparse, single-user and single-channel
    configurations, and every user count on a channel."""
    rng = np.random.default_rng(7)
    counts_seen = set()
    for n_users, n_channels in ((1, 1), (2, 1), (3, 2), (6, 3), (9, 4), (5, 8)):
        config = DSAConfig.setup(setup, n_users=n_users, n_channels=n_channels, horizon=6)
        env = BatchedDSAEnv(config, 8, seed=n_users)
        env.reset()
        np.testing.assert_array_equal(env.difference_reward, 0.0)
        for _ in range(config.horizon):
            idle_prob = rng.random()
            channels = rng.integers(1, config.n_actions, size=(8, n_users))
            actions = np.where(rng.random((8, n_users)) < idle_prob, 0, channels)
            pu_busy = env.pu_busy.copy()
            _, reward, _, _ = env.step(actions)
            for b in range(8):
                counts_seen.update(np.bincount(actions[b])[actions[b]].tolist())
                for n in range(n_users):
                    without = actions[b].copy()
                    without[n] = 0
                    reference = ReferenceDSAEnv(config)
                    reference.reset(snr=env.snr[b])
                    _, reward_without, _, _ = reference.step(without, pu_busy=pu_busy[b])
                    assert env.difference_reward[b, n] == pytest.approx(reward[b] - reward_without, abs=1e-12), (b, n)
    assert {1, 2, 3} <= counts_seen  # alone, a pair and a crowd on a channel all occurred
