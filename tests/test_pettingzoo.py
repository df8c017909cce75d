"""The PettingZoo ParallelEnv adapter: PettingZoo's own API checks, and agreement with the batched env."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import processes

pytest.importorskip("pettingzoo")

from hapruned.env import BatchedDSAEnv, DSAConfig, encode_env_observations  # noqa: E402
from hapruned.env.pettingzoo import DSAParallelEnv  # noqa: E402
from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402


@pytest.mark.parametrize("observe_snr", [False, True])
@pytest.mark.parametrize("setup", ["A", "B"])
def test_parallel_api(setup, observe_snr):
    config = DSAConfig.setup(setup, horizon=25, observe_snr=observe_snr)
    env = DSAParallelEnv(config, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports some problems only as warnings
        parallel_api_test(env, num_cycles=100)  # runs past the horizon


def test_parallel_seed():
    parallel_seed_test(lambda: DSAParallelEnv(DSAConfig.setup("B", horizon=20)), num_cycles=50)


@pytest.mark.parametrize("observe_snr, features", [(False, 8), (True, 9)])
def test_spaces_rewards_and_end_of_episode_match_the_batched_env(observe_snr, features):
    config = DSAConfig.setup("B", n_users=4, n_channels=3, horizon=6, observe_snr=observe_snr, snr_low=1, snr_high=100)
    env = DSAParallelEnv(config, seed=5)
    batched = BatchedDSAEnv(config, 1, seed=5)
    agents = ["user_0", "user_1", "user_2", "user_3"]
    assert env.possible_agents == agents and env.agents == []
    assert env.observation_space("user_2").shape == (features,)
    assert env.observation_space("user_2").dtype == np.float32
    assert env.action_space("user_2").n == 4

    observations, infos = env.reset(seed=9)
    batched_obs = batched.reset(seed=9)
    assert env.agents == agents and set(infos) == set(agents)
    rng = np.random.default_rng(0)
    for t in range(config.horizon):
        joint = rng.integers(0, 4, size=(1, 4))
        expected = encode_env_observations(config, batched_obs[0], batched.observed_rate[0])
        for n, agent in enumerate(agents):
            np.testing.assert_array_equal(observations[agent], expected[n])
            assert env.observation_space(agent).contains(observations[agent])
        observations, rewards, terminations, truncations, infos = env.step(
            {agent: int(joint[0, n]) for n, agent in enumerate(agents)}
        )
        batched_obs, reward, throughput, done = batched.step(joint)
        np.testing.assert_array_equal(env.state(), np.stack([observations[agent] for agent in agents]))
        assert all(rewards[agent] == reward[0] for agent in agents)
        assert [infos[agent]["throughput"] for agent in agents] == throughput[0].tolist()
        assert not any(terminations.values())
        assert all(truncations[agent] == (t == config.horizon - 1) for agent in agents)
    assert env.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def test_bad_actions_and_render_mode():
    env = DSAParallelEnv(DSAConfig(n_users=2, n_channels=2), seed=0)
    env.reset()
    with pytest.raises(ValueError, match="user_1"):
        env.step({"user_0": 1})
    with pytest.raises(ValueError, match="unknown"):
        env.step({"user_0": 1, "user_1": 0, "user_7": 0})
    with pytest.raises(ValueError, match=r"0\.\.2"):
        env.step({"user_0": 3, "user_1": 0})
    with pytest.raises(ValueError, match="render_mode"):
        DSAParallelEnv(render_mode="human")


def test_pettingzoo_stays_an_optional_import():
    code = """
import sys
import hapruned.env
assert "pettingzoo" not in sys.modules, "importing hapruned.env imported pettingzoo"
sys.modules["pettingzoo"] = None  # as if it were not installed
try:
    import hapruned.env.pettingzoo
except ImportError as error:
    assert "pip install hapruned[pettingzoo]" in str(error), error
else:
    raise AssertionError("the adapter imported without pettingzoo")
"""
    result = processes.run([sys.executable, "-W", "ignore", "-c", code], timeout=120, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
