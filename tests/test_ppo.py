"""IAGC-PPO core: GAE, shapes, determinism, exact resume, NaN safety, pruning integration, config checks."""

import copy
import io

import pytest
import torch

from hapruned.algos import IAGCPPO, TrainConfig, compute_gae
from hapruned.algos.config import parse_seeds

SMALL = dict(n_users=3, n_channels=2, horizon=8, hidden_size=16, envs_per_iteration=4, minibatches=2, epochs=2,
             iterations=6, i_prune=2, actor_lr=1e-3, critic_lr=1e-3)


def small(**overrides) -> TrainConfig:
    return TrainConfig(**{**SMALL, **overrides})


def params_of(algo: IAGCPPO) -> dict:
    return {f"{part}.{k}": v.detach().clone() for part in ("actor", "critic") for k, v in getattr(algo, part).state_dict().items()}


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_gae_matches_hand_computation():
    rewards = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    values = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    # gamma 0.9, lambda 0.8: deltas 1.4, 2.35, 1.5; A2 = 1.5, A1 = 2.35 + 0.72 * 1.5, A0 = 1.4 + 0.72 * A1
    advantages, returns = compute_gae(rewards, values, 0.9, 0.8)
    torch.testing.assert_close(advantages, torch.tensor([3.8696, 3.43, 1.5], dtype=torch.float64))
    torch.testing.assert_close(returns, advantages + values)
    # lambda = 1: returns are the discounted rewards-to-go, whatever the values
    _, returns = compute_gae(rewards, values, 0.9, 1.0)
    torch.testing.assert_close(returns, torch.tensor([1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3.0], dtype=torch.float64))


def test_gae_broadcasts_over_trailing_axes():
    rewards, values = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    advantages, _ = compute_gae(rewards, values, 0.99, 0.95)
    single, _ = compute_gae(rewards[:, 1, 2], values[:, 1, 2], 0.99, 0.95)
    torch.testing.assert_close(advantages[:, 1, 2], single)


@pytest.mark.parametrize("critic_input", ["own", "joint"])
def test_shapes_and_metrics(critic_input):
    cfg = small(seeds=(0, 1), critic_input=critic_input)
    algo = IAGCPPO(cfg)
    S, N, B, T, K = 2, cfg.n_users, cfg.envs_per_iteration, cfg.horizon, cfg.n_channels
    inputs, actions, log_probs, rewards = algo._play(algo.env, B, algo.generator)
    assert inputs.shape == (T, S * N, B, K + 5) and actions.shape == (T, S * N, B) and log_probs.shape == (T, S * N, B)
    assert rewards.shape == (T, S, B)
    assert int(actions.min()) >= 0 and int(actions.max()) <= K
    torch.testing.assert_close(inputs.sum(-1), torch.full((T, S * N, B), 2.0))  # two one-hot blocks
    with torch.inference_mode():
        assert algo._values(inputs).shape == (T, S * N, B)
    metrics = algo.train_iteration(1)
    assert metrics["agent_steps"] == N * S * B * T
    assert len(metrics["episode_reward_per_seed"]) == S and len(metrics["sparsity"]) == N
    for key in ("episode_reward", "approx_kl", "clip_fraction", "entropy", "explained_variance", "actor_loss", "critic_loss"):
        assert isinstance(metrics[key], float) and torch.isfinite(torch.tensor(metrics[key])), key
    assert 0 < metrics["entropy"] <= torch.log(torch.tensor(K + 1.0)) + 1e-6
    evaluation = algo.evaluate(5, seed=123)
    assert len(evaluation) == S and all(r >= 0 for r in evaluation)


def test_orthogonal_init():
    algo = IAGCPPO(small(seeds=(0, 1), init="orthogonal"))
    uniform = IAGCPPO(small(seeds=(0, 1)))
    for module in (algo.actor.lstm, algo.critic.lstm):
        for name, param in module.named_parameters():
            if name.startswith("bias"):
                assert not param.any(), name
                continue
            for w in param:  # per group: orthonormal columns (these weights are taller than wide)
                torch.testing.assert_close(w.T @ w, torch.eye(w.shape[1]), atol=1e-5, rtol=0, msg=name)
    head = algo.actor.head.weight  # [groups, actions, hidden]: orthonormal rows scaled by 0.01
    for w in head:
        torch.testing.assert_close(w @ w.T, 1e-4 * torch.eye(w.shape[0]), atol=1e-8, rtol=0)
    torch.testing.assert_close(algo.critic.head.weight[0] @ algo.critic.head.weight[0].T, torch.ones(1, 1))
    # groups are distinct draws, and the default is not orthogonal
    assert not torch.equal(algo.actor.lstm.weight_hh_l0[0], algo.actor.lstm.weight_hh_l0[1])
    w = uniform.actor.lstm.weight_hh_l0[0]
    assert (w.T @ w - torch.eye(w.shape[1])).abs().max() > 0.1
    assert IAGCPPO(small(init="orthogonal")).train_iteration(1)["entropy"] > 0


def test_same_seed_same_run_and_different_seed_differs():
    runs = []
    for seed in (7, 7, 8):
        algo = IAGCPPO(small(seed=seed))
        metrics = [algo.train_iteration(i)["episode_reward"] for i in (1, 2)]
        runs.append((metrics, params_of(algo)))
    assert runs[0][0] == runs[1][0]
    assert_same_params(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]


def test_seed_init_does_not_depend_on_the_other_seeds():
    alone, together = IAGCPPO(small(seed=5)), IAGCPPO(small(seeds=(3, 5)))
    N = SMALL["n_users"]
    for name, p in alone.actor.named_parameters():
        torch.testing.assert_close(p, dict(together.actor.named_parameters())[name][N:], rtol=0, atol=0)
    for name, p in alone.critic.named_parameters():
        torch.testing.assert_close(p, dict(together.critic.named_parameters())[name][1:], rtol=0, atol=0)
    assert (alone.env.rng_states == together.env.rng_states[SMALL["envs_per_iteration"]:]).all()


@pytest.mark.parametrize("method,mode", [("harmonic", "regrow"), ("linear", "masked"), ("dense", "regrow")])
def test_state_dict_round_trip_gives_identical_next_iteration(method, mode):
    cfg = small(method=method, prune_mode=mode, seeds=(0, 1))
    first = IAGCPPO(cfg)
    for i in (1, 2, 3):
        first.train_iteration(i)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    expected = [first.train_iteration(i) for i in (4, 5)]
    expected_params = params_of(first)

    buffer.seek(0)
    resumed = IAGCPPO(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))  # tensors and plain values only
    got = [resumed.train_iteration(i) for i in (4, 5)]
    assert got == expected
    assert_same_params(params_of(resumed), expected_params)


def test_evaluation_leaves_training_random_state_alone():
    plain, evaluated = IAGCPPO(small()), IAGCPPO(small())
    plain.train_iteration(1)
    evaluated.train_iteration(1)
    first = evaluated.evaluate(4, seed=99)
    assert evaluated.evaluate(4, seed=99) == first  # same held-out episodes and actions every time
    assert plain.train_iteration(2) == evaluated.train_iteration(2)


@pytest.mark.parametrize("mode", ["regrow", "masked"])
def test_final_actors_are_exactly_p_final_sparse_and_critic_biases_dense(mode):
    targets = (0.5, 0.9, 0.75)
    cfg = small(method="harmonic", prune_mode=mode, agent_sparsity=targets, iterations=4, seeds=(0, 1))
    algo = IAGCPPO(cfg)
    for i in range(1, 5):
        metrics = algo.train_iteration(i)
    actor = {name: algo.actor.get_parameter(name) for name in algo.actor.prunable_names}
    if mode == "masked":  # the parameters play weight_orig; the network uses weight * mask
        actor = {name: w * algo.actor.get_buffer(name + "_mask") for name, w in actor.items()}
    sizes = sum(actor[n][0].numel() for n in algo.actor.prunable_names)
    for s in range(2):
        for n, p in enumerate(targets):
            zeros = sum(int((actor[name][s * 3 + n] == 0).sum()) for name in algo.actor.prunable_names)
            assert zeros == round(p * sizes)
    assert metrics["sparsity"] == pytest.approx([round(p * sizes) / sizes for p in targets])
    assert metrics["target_sparsity"] == pytest.approx(list(targets)) and metrics["pruned"]
    for name, param in algo.actor.named_parameters():
        if name not in actor:
            assert (param != 0).all(), name
    for name, param in algo.critic.named_parameters():
        assert (param != 0).all(), name


def test_nan_loss_raises_and_leaves_parameters_unchanged(monkeypatch):
    algo = IAGCPPO(small())
    algo.train_iteration(1)
    before, optimizer_before = params_of(algo), copy.deepcopy(algo.actor_optimizer.state_dict())
    play = algo._play

    def nan_rewards(*args, **kwargs):
        inputs, actions, log_probs, rewards = play(*args, **kwargs)
        return inputs, actions, log_probs, rewards.clone().fill_(float("nan"))

    monkeypatch.setattr(algo, "_play", nan_rewards)
    with pytest.raises(FloatingPointError, match="non-finite"):
        algo.train_iteration(2)
    assert_same_params(params_of(algo), before)
    after = algo.actor_optimizer.state_dict()["state"]
    for key, state in optimizer_before["state"].items():
        torch.testing.assert_close(after[key]["exp_avg"], state["exp_avg"], rtol=0, atol=0)


def test_failure_after_some_minibatches_restores_the_state_before_the_update(monkeypatch):
    algo = IAGCPPO(small())
    algo.train_iteration(1)
    before = params_of(algo)
    step, calls = algo._minibatch_step, []

    def fail_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise FloatingPointError("non-finite loss (injected)")
        step(*args)

    monkeypatch.setattr(algo, "_minibatch_step", fail_on_third)
    with pytest.raises(FloatingPointError):
        algo.train_iteration(2)
    assert len(calls) == 3
    assert_same_params(params_of(algo), before)


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"method": "magnitude"}, "method"),
        ({"setup": "C"}, "setup"),
        ({"prune_mode": "soft"}, "prune_mode"),
        ({"critic_input": "global"}, "critic_input"),
        ({"init": "xavier"}, "init"),
        ({"envs_per_iteration": 6, "minibatches": 4}, "minibatches"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"agent_sparsity": (0.9, 0.9)}, "agent_sparsity"),
        ({"seeds": (1, 1)}, "seeds"),
        ({"iterations": 0}, "iterations"),
        ({"gamma": 1.5}, "gamma"),
        ({"i_end": 100, "iterations": 50}, "i_end"),
        ({"device": "tpu"}, "device"),
        ({"period": 0}, "period"),
        ({"hidden_size": 2.5}, "hidden_size"),
    ],
)
def test_bad_config_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be"):
        small(**changes)


def test_presets_and_seed_parsing():
    paper = TrainConfig.preset("paper")
    assert (paper.iterations, paper.envs_per_iteration, paper.actor_lr, paper.critic_lr) == (1000, 1, 1e-4, 5e-5)
    assert TrainConfig.preset("fast", seed=3).seed == 3
    assert (TrainConfig.preset("fast").prune_mode, paper.prune_mode) == ("masked", "regrow")
    with pytest.raises(ValueError, match="preset must be one of"):
        TrainConfig.preset("slow")
    assert parse_seeds("0-3,7") == (0, 1, 2, 3, 7)
    assert small(seeds=(4, 2)).seed_list == (4, 2) and small(seed=9).seed_list == (9,)
    # the harmonic period follows the run length (the paper's 200 at 1000 iterations) unless given
    assert (paper.schedule_period, small(iterations=50).schedule_period, small(period=7).schedule_period) == (200, 10, 7)
