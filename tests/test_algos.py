"""The paper's learned baselines: plain IAGC actor-critic (ac), recurrent DQN with parameter sharing
(dqn) and PaI with parameter sharing (pai); their configs, update rules and learning."""

import copy

import numpy as np
import pytest
import torch

from hapruned.algos import IAGCPPO, RecurrentDQN, TrainConfig
from hapruned.algos.config import ALGOS, UNUSED_FIELDS
from hapruned.algos.dqn import EpisodeReplay, double_dqn_targets
from hapruned.algos.models import GroupedActor
from hapruned.env import BatchedDSAEnv, encode_observations
from hapruned.env.reference import ReferenceDSAEnv
from test_env_reference import reference_snr_feature
from test_learning import expected_aloha_episode_reward

SMALL = dict(n_users=3, n_channels=2, horizon=8, hidden_size=16, envs_per_iteration=4, iterations=6)


def small(algo: str, **overrides) -> TrainConfig:
    return TrainConfig.preset("paper", algo=algo, **{**SMALL, **overrides})


# ---------------------------------------------------------------------------------------------- configs
def test_each_algorithm_gets_its_own_defaults_from_the_presets():
    for preset in ("paper", "fast"):
        assert TrainConfig.preset(preset).algo == "ppo"
        ac = TrainConfig.preset(preset, algo="ac")
        assert (ac.method, ac.epochs, ac.minibatches) == ("dense", 1, 1)
        pai = TrainConfig.preset(preset, algo="pai")
        assert (pai.method, pai.sparsity) == ("constant", 0.5)
        dqn = TrainConfig.preset(preset, algo="dqn")
        assert dqn.method == "dense"
        # the preset's values of fields DQN does not read are dropped, so they keep their defaults
        assert (dqn.prune_mode, dqn.critic_input, dqn.epochs) == ("regrow", "own", 4)
    fast = TrainConfig.preset("fast")
    assert TrainConfig.preset("fast", algo="dqn").envs_per_iteration == fast.envs_per_iteration
    assert TrainConfig.preset("fast", algo="pai").critic_input == fast.critic_input == "joint"


@pytest.mark.parametrize(
    "algo,changes,field",
    [
        ("dqn", {"prune_mode": "masked"}, "prune_mode"),
        ("dqn", {"method": "harmonic"}, "method"),
        ("dqn", {"sparsity": 0.5}, "sparsity"),
        ("dqn", {"clip": 0.1}, "clip"),
        ("pai", {"method": "harmonic"}, "method"),
        ("pai", {"i_prune": 3}, "i_prune"),
        ("pai", {"replay_batch": 8}, "replay_batch"),
        ("ac", {"epochs": 3}, "epochs"),
        ("ac", {"clip": 0.3}, "clip"),
        ("ppo", {"target_update": 5}, "target_update"),
        ("dqn", {"replay_capacity": 2}, "replay_capacity"),
        ("dqn", {"epsilon_decay": 0.0}, "epsilon_decay"),
    ],
)
def test_bad_combinations_name_the_field_and_the_algorithm(algo, changes, field):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be"):
        small(algo, **changes)


def test_every_unused_field_is_a_real_field():
    fields = set(TrainConfig.__dataclass_fields__)
    for algo in ALGOS:
        assert set(UNUSED_FIELDS[algo]) <= fields


# ---------------------------------------------------------------------------------------------- AC
def test_ac_gradient_is_the_plain_policy_gradient_with_entropy_bonus():
    cfg = small("ac", entropy_coef=0.05)
    algo = IAGCPPO(cfg)
    B = cfg.envs_per_iteration
    inputs, actions, old_log_probs, _ = algo._play(algo.env, B, algo.generator)
    inputs, actions, old_log_probs = inputs.clone(), actions.clone(), old_log_probs.clone()
    advantages = torch.randn(actions.shape, generator=torch.Generator().manual_seed(0))
    returns = torch.randn(actions.shape, generator=torch.Generator().manual_seed(1))
    snapshot = copy.deepcopy(algo.actor.state_dict())

    # the learner's step: capture the actor's gradient before the optimiser moves the weights
    algo.actor_optimizer.step = lambda: None
    stats = {k: [] for k in ("actor_loss", "critic_loss", "entropy", "actor_grad_norm", "critic_grad_norm")}
    algo._minibatch_step(inputs, actions, old_log_probs, advantages, returns, stats)
    assert all(len(values) == 1 for values in stats.values())
    got = {name: p.grad.clone() for name, p in algo.actor.named_parameters()}

    # written out: per agent, -mean_t,b[log pi(a) * A_hat] - c * mean_t,b[H], summed over agents,
    # A_hat the advantages standardised per agent; gradients clipped per agent as the learner does
    reference = GroupedActor(algo.G, algo.F, cfg.hidden_size, cfg.num_layers, algo.K + 1)
    reference.load_state_dict(snapshot)
    logits, _ = reference(inputs)
    log_pi = torch.log_softmax(logits, -1)
    taken = log_pi.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_pi.exp() * log_pi).sum(-1)
    standard = (advantages - advantages.mean((0, 2), keepdim=True)) / (advantages.std((0, 2), keepdim=True) + 1e-8)
    loss = (-(taken * standard).mean((0, 2)) - cfg.entropy_coef * entropy.mean((0, 2))).sum()
    loss.backward()
    params = dict(reference.named_parameters())
    norms = sum(p.grad.pow(2).flatten(1).sum(1) for p in params.values()).sqrt()
    scale = (cfg.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    for name, grad in got.items():
        expected = params[name].grad * scale.view(-1, *([1] * (grad.ndim - 1)))
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6, msg=name)


def test_ac_takes_one_step_per_iteration():
    algo = IAGCPPO(small("ac"))
    calls = []
    step = algo._minibatch_step
    algo._minibatch_step = lambda *args: (calls.append(args[0].shape), step(*args))
    algo.train_iteration(1)
    assert calls == [(SMALL["horizon"], SMALL["n_users"], SMALL["envs_per_iteration"], algo.F)]


# ---------------------------------------------------------------------------------------------- PaI
def pai_masks(algo):
    return [algo.actor.get_buffer(name + "_mask") for name in algo.actor.prunable_names]


def test_pai_masks_are_exact_distinct_and_fixed():
    targets = (0.5, 0.8, 0.3)
    algo = IAGCPPO(small("pai", agent_sparsity=targets, seeds=(0, 1)))
    masks = [m.clone() for m in pai_masks(algo)]
    total = sum(m[0].numel() for m in masks)
    for s in range(2):
        for n, p in enumerate(targets):
            pruned = sum(int((~m[s * 3 + n]).sum()) for m in masks)
            assert pruned == round(p * total)
    flat = torch.cat([m.flatten(1) for m in masks], dim=1)
    assert len({tuple(row.tolist()) for row in flat}) == flat.shape[0]  # every agent its own subnetwork
    for i in range(1, 4):
        metrics = algo.train_iteration(i)
    for before, after in zip(masks, pai_masks(algo)):
        assert torch.equal(before, after)
    assert metrics["sparsity"] == pytest.approx([round(p * total) / total for p in targets])


def test_pai_weights_pruned_by_every_agent_never_move():
    algo = IAGCPPO(small("pai", sparsity=0.8))
    before = {name: p.detach().clone() for name, p in algo.actor.named_parameters()}
    for i in range(1, 4):
        algo.train_iteration(i)
    moved_somewhere = False
    for name, mask in zip(algo.actor.prunable_names, pai_masks(algo)):
        nobody = ~mask.any(0)  # pruned in every agent's subnetwork: no gradient, no Adam step
        weight = algo.actor.get_parameter(name)[0]
        assert torch.equal(weight[nobody], before[name][0][nobody]), name
        moved_somewhere |= bool((weight[~nobody] != before[name][0][~nobody]).any())
    assert moved_somewhere


def test_pai_shared_gradient_is_the_sum_of_per_agent_gradients():
    algo = IAGCPPO(small("pai"))
    N, T, b = algo.N, 5, 3
    x = torch.randn(T, N, b, algo.F)
    weights = torch.randn(T, N, b, algo.K + 1)
    logits, _ = algo.actor(x)
    (logits * weights).sum().backward()
    shared = {name: p.grad.clone() for name, p in algo.actor.named_parameters()}

    summed = {name: torch.zeros_like(g) for name, g in shared.items()}
    for n in range(N):  # agent n alone: the shared weights under agent n's own masks
        agent = GroupedActor(1, algo.F, algo.config.hidden_size, algo.config.num_layers, algo.K + 1)
        agent.load_state_dict({name: p.detach() for name, p in algo.actor.named_parameters()}, strict=False)
        for name in algo.actor.prunable_names:
            owner, _, attr = name.rpartition(".")
            setattr(agent.get_submodule(owner), attr + "_mask", algo.actor.get_buffer(name + "_mask")[n:n + 1].clone())
        out, _ = agent(x[:, n:n + 1])
        (out * weights[:, n:n + 1]).sum().backward()
        for name, p in agent.named_parameters():
            summed[name] += p.grad
    for name in shared:
        torch.testing.assert_close(shared[name], summed[name], rtol=1e-4, atol=1e-5, msg=name)


# ---------------------------------------------------------------------------------------------- DQN
def test_double_dqn_targets_match_a_hand_computation():
    gamma = 0.9
    rewards = torch.tensor([[1.0], [2.0], [3.0]])  # (T=3, one sequence)
    q_online = torch.tensor([[[9.0, 9.0]], [[0.5, 0.9]], [[3.0, 1.0]]])  # argmax at t=1: action 1, t=2: action 0
    q_target = torch.tensor([[[5.0, 5.0]], [[10.0, 20.0]], [[7.0, 8.0]]])
    targets = double_dqn_targets(rewards, q_online, q_target, gamma)
    # y0 = 1 + 0.9 * q_target[1, 1]; y1 = 2 + 0.9 * q_target[2, 0]; the last step has no successor
    torch.testing.assert_close(targets, torch.tensor([[1 + 0.9 * 20.0], [2 + 0.9 * 7.0], [3.0]]))


@pytest.mark.parametrize("input_dtype", [torch.uint8, torch.float32], ids=["one-hot", "with-snr-feature"])
def test_replay_stores_and_returns_whole_episodes(input_dtype):
    S, N, T, F, capacity = 2, 3, 4, 5, 5
    replay = EpisodeReplay(S, capacity, T, N, F, "cpu", input_dtype)
    gen = torch.Generator().manual_seed(0)
    stored = []  # (inputs (T,S*N,1,F), actions, rewards (T,S,1)) of each episode, in order
    for episode in range(7):  # more than the capacity: the two oldest are overwritten
        inputs = (torch.rand(T, S * N, 1, F, generator=gen) < 0.5).float()
        if input_dtype == torch.float32:  # a feature in [0, 1] in the last column, kept exactly
            inputs[..., -1] = torch.rand(T, S * N, 1, generator=gen)
        actions = torch.randint(3, (T, S * N, 1), generator=gen)
        rewards = torch.full((T, S, 1), float(episode)) + torch.arange(S).view(1, S, 1) / 10
        replay.add(inputs, actions, rewards)
        stored.append((inputs, actions, rewards))
    assert replay.size == capacity
    index = replay.sample(50, torch.Generator().manual_seed(1))
    inputs, actions, rewards = replay.episodes(index)
    seen = set()
    for s in range(S):
        for j in range(index.shape[1]):
            episode = int(rewards[0, s, j])  # which episode this is, from its reward
            assert episode >= 2, "an overwritten episode came back"
            seen.add(episode)
            want_inputs, want_actions, want_rewards = stored[episode]
            group = slice(s * N, (s + 1) * N)
            assert torch.equal(inputs[:, s, j], want_inputs[:, group, 0])
            assert torch.equal(actions[:, s, j], want_actions[:, group, 0])
            assert torch.equal(rewards[:, s, j], want_rewards[:, s, 0])
    assert seen == {2, 3, 4, 5, 6}


def q_params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_target_network_changes_only_at_its_hard_update():
    algo = RecurrentDQN(small("dqn", updates_per_iteration=1, target_update=3, replay_capacity=8))
    initial = q_params(algo.target)
    for i in (1, 2):
        algo.train_iteration(i)
        assert all(torch.equal(a, b) for a, b in zip(q_params(algo.target), initial))
        assert not all(torch.equal(a, b) for a, b in zip(q_params(algo.q), initial))
    algo.train_iteration(3)
    assert all(torch.equal(a, b) for a, b in zip(q_params(algo.target), q_params(algo.q)))


def test_polyak_target_moves_by_tau_after_every_update():
    algo = RecurrentDQN(small("dqn", updates_per_iteration=1, target_tau=0.25, replay_capacity=8))
    target_before = q_params(algo.target)
    algo.train_iteration(1)
    for target, online, before in zip(q_params(algo.target), q_params(algo.q), target_before):
        torch.testing.assert_close(target, before + 0.25 * (online - before))


def test_dqn_epsilon_schedule_and_one_shared_network():
    cfg = small("dqn", iterations=10, epsilon_start=1.0, epsilon_end=0.1, epsilon_decay=0.5, seeds=(0, 1))
    algo = RecurrentDQN(cfg)
    assert [round(algo.epsilon_at(i), 6) for i in (1, 3, 6, 10)] == [1.0, 0.64, 0.1, 0.1]
    # one weight set per seed, whatever the number of agents
    assert all(p.shape[0] == 2 for p in algo.q.parameters())
    metrics = algo.train_iteration(1)
    assert metrics["epsilon"] == 1.0 and metrics["replay_size"] == cfg.envs_per_iteration
    assert metrics["agent_steps"] == 2 * cfg.n_users * cfg.envs_per_iteration * cfg.horizon


def test_dqn_greedy_clones_act_alike_on_the_same_history():
    algo = RecurrentDQN(small("dqn"))
    # every agent sees the dummy first observation, so a greedy shared network picks one action for all
    inputs, actions, _, _ = algo._play(algo.env, 4, algo.generator, training=False, greedy=True)
    assert (actions[0] == actions[0, 0, 0]).all()


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_learners_read_the_observations_and_snr_feature_of_the_reference_env(algo):
    """A rollout's recorded inputs are the encoding of what the reference environment gives for the same
    actions and draws: one-hots, and the SNR of each transmission not blocked by a primary user."""
    cfg = small(algo, pu_prob=0.3, snr_low=1.0, snr_high=100.0, observe_snr=True, seeds=(0, 1))
    algo = (RecurrentDQN if algo == "dqn" else IAGCPPO)(cfg)
    S, N, B, K, T = algo.S, algo.N, cfg.envs_per_iteration, cfg.n_channels, cfg.horizon
    assert algo.F == K + 6
    replay = BatchedDSAEnv(cfg.env_config, S * B)  # the learner's draws, for the primary users' states
    replay.rng_states = algo.env.rng_states
    inputs, actions, _, _ = algo._play(algo.env, B, algo.generator)
    replay.reset()
    references = [ReferenceDSAEnv(cfg.env_config) for _ in range(S * B)]
    for e, reference in enumerate(references):
        reference.reset(snr=replay.snr[e])
    # input (t, group s*N + n, b) <-> environment s*B + b, user n
    seen = inputs.view(T, S, N, B, -1).permute(0, 1, 3, 2, 4).reshape(T, S * B, N, -1).numpy()
    start = np.zeros((S * B, N, 2), dtype=np.int64)  # (idle, 0) and nothing observed
    np.testing.assert_array_equal(seen[0], encode_observations(start, K, snr_feature=np.zeros((S * B, N))))
    for t in range(T - 1):
        env_actions = algo._to_env_actions(actions[t], B)
        busy = replay.pu_busy.copy()
        replay.step(env_actions)
        for e, reference in enumerate(references):
            obs, *_ = reference.step(env_actions[e], pu_busy=busy[e])
            expected = encode_observations(obs, K, snr_feature=reference_snr_feature(reference, obs))
            np.testing.assert_allclose(seen[t + 1, e], expected, atol=1e-6)
    assert np.any((seen[..., -1] > 0) & (seen[..., -1] < 1))  # the feature was seen


# ---------------------------------------------------------------------------------------------- learning
# A learning threshold must hold on any CPU: another floating-point order (another BLAS path, vector width,
# compiler or thread count) gives another trajectory, much as another seed does. So each threshold below sits
# well under the worst of ten seeds (0-9, measured on a 2-core AMD EPYC, torch 2.13.0+cpu), and a method that
# does not learn on every seed is asked only for its best of four seeds trained side by side.
LEARN = dict(n_users=3, n_channels=2, horizon=16, hidden_size=32, envs_per_iteration=16, seed=0, actor_lr=3e-3)


def learn(cfg, learner):
    """(untrained, trained) rewards per seed on the same 100 held-out episodes, and optimal Aloha's reward."""
    algo = learner(cfg)
    untrained = np.array(algo.evaluate(100, seed=12345))
    for i in range(1, cfg.iterations + 1):
        algo.train_iteration(i)
    return untrained, np.array(algo.evaluate(100, seed=12345)), expected_aloha_episode_reward(cfg)


@pytest.mark.parametrize("algo,iterations,seeds", [("ac", 150, None), ("pai", 40, (0, 1, 2, 3))])
def test_actor_critic_baselines_learn_to_beat_aloha(algo, iterations, seeds):
    """Plain IAGC learns on every seed (seeds 0-9: 2.22-2.25x Aloha at 150 iterations). PaI's agents share one
    set of weights under their own masks, and some seeds stay at Aloha's level (seeds 0-9 at 40 iterations:
    1.01-2.24x, three below 1.1x; at 80 iterations still two); the best of four seeds side by side reached
    2.13-2.20x for seeds 0-3, 4-7 and 8-11."""
    extra = {"epochs": 4} if algo == "pai" else {}
    cfg = TrainConfig.preset("fast", algo=algo, critic_lr=3e-3, entropy_coef=0.003, minibatches=1,
                             iterations=iterations, seeds=seeds, **LEARN, **extra)
    untrained, trained, aloha = learn(cfg, IAGCPPO)
    # two users alone on the two channels would earn 2 * 5.17 * 16 = 165; Aloha earns about 73
    print(f"{algo}: aloha {aloha:.1f}, untrained {untrained.round(1)}, trained {trained.round(1)}")
    assert untrained.mean() < 1.2 * aloha
    assert trained.max() > 1.5 * aloha


def test_dqn_learns_what_shared_clones_can_and_a_single_user_learns_fully():
    """What this shows: with one user (no clones to tell apart) DQN learns the optimal policy, to
    transmit in every slot; with three users on two channels, identical clones that see the same
    first observation start on the same channel, and only exploration (eval_epsilon) makes their
    histories differ. DQN then learns to earn several times what its untrained network earns under
    the same evaluation, yet stays below Aloha here, as the paper's DQN baseline does.

    Seeds 0-9: one user ends at 98.0-98.4% of the best; three users gain 0.19-0.40x Aloha's reward over the
    untrained network (seed 0 the least, 4.3 -> 18.5), so a gain of 0.1x Aloha is asked for."""
    alone = TrainConfig.preset("fast", algo="dqn", iterations=40, **{**LEARN, "n_users": 1, "actor_lr": 1e-3})
    untrained, trained, _ = learn(alone, RecurrentDQN)
    best = 16 * float(np.mean(np.log2(1 + np.linspace(30, 40, 10_001))))  # a success in every slot
    print(f"dqn, one user: untrained {untrained[0]:.1f}, trained {trained[0]:.1f}, best {best:.1f}")
    assert trained[0] > 0.95 * best

    shared = TrainConfig.preset("fast", algo="dqn", iterations=100, **{**LEARN, "actor_lr": 1e-3})
    untrained, trained, aloha = learn(shared, RecurrentDQN)
    print(f"dqn, three users: aloha {aloha:.1f}, untrained {untrained[0]:.1f}, trained {trained[0]:.1f}")
    assert trained[0] > untrained[0] + 0.1 * aloha
