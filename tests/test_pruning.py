"""The pruner: exact per-group counts, event timing, regrowth in `regrow` mode, frozen pruned
weights in `masked` mode, optimiser-state resets, per-matrix thresholds and resuming."""

import pytest
import torch
from torch import nn

from hapruned.nn import GroupedLinear, GroupedLSTM
from hapruned.ops import prune_counts
from hapruned.pruning import Pruner, make_schedule

GROUPS, INPUT, HIDDEN, ACTIONS, TIME, BATCH = 3, 5, 8, 4, 6, 7
WEIGHTS = ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1", "lstm.weight_hh_l1", "head.weight"]
BIASES = ["lstm.bias_l0", "lstm.bias_l1", "head.bias"]


class Actor(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = GroupedLSTM(GROUPS, INPUT, HIDDEN, num_layers=2, dtype=torch.float64)
        self.head = GroupedLinear(GROUPS, HIDDEN, ACTIONS, dtype=torch.float64)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y)  # (time, groups, batch, actions)


def make_actor(seed=0):
    torch.manual_seed(seed)
    actor = Actor()
    x = torch.randn(TIME, GROUPS, BATCH, INPUT, dtype=torch.float64)
    target = torch.randint(0, ACTIONS, (TIME, GROUPS, BATCH))
    return actor, x, target


def train(actor, optimizer, x, target, steps):
    for _ in range(steps):
        logits = actor(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, ACTIONS), target.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def weight_count():
    return 4 * HIDDEN * (INPUT + HIDDEN + HIDDEN + HIDDEN) + ACTIONS * HIDDEN


def flat_weights(actor, pruner=None):
    weights = pruner.effective_weights() if pruner else [dict(actor.named_parameters())[n].detach() for n in WEIGHTS]
    return torch.cat([w.reshape(GROUPS, -1) for w in weights], dim=1)


@pytest.mark.parametrize("mode", ["regrow", "masked"])
def test_exact_final_sparsity_per_group_and_event_timing(mode):
    actor, x, target = make_actor()
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-2)
    p_final = [0.95, 0.5, 0.8]
    total = 23  # not on the i_prune grid: the last event is the extra one
    schedule = make_schedule("harmonic", p_final, groups=GROUPS, i_end=total, period=8)
    pruner = Pruner(actor, WEIGHTS, schedule, mode=mode, i_prune=5, total_iterations=total, optimizer=optimizer)
    events = []
    for i in range(1, total + 1):
        train(actor, optimizer, x, target, 1)
        biases = {n: p.detach().clone() for n, p in actor.named_parameters() if n in BIASES}
        if pruner.step(i):
            events.append(i)
            for n, p in actor.named_parameters():  # an event never touches a bias
                if n in BIASES:
                    assert torch.equal(p, biases[n])
    assert events == [5, 10, 15, 20, 23]
    want = prune_counts(torch.tensor(p_final), GROUPS, weight_count()).to(torch.float64) / weight_count()
    print("sparsity", pruner.sparsity().tolist(), "want", want.tolist())
    assert torch.equal(pruner.sparsity(), want)
    assert torch.equal((flat_weights(actor, pruner) == 0).sum(1), prune_counts(torch.tensor(p_final), GROUPS, weight_count()))


def test_events_start_at_i_start():
    actor, _, _ = make_actor()
    schedule = make_schedule("linear", 0.5, groups=GROUPS, i_start=7, i_end=30)
    pruner = Pruner(actor, WEIGHTS, schedule, i_prune=4, total_iterations=30)
    assert [i for i in range(1, 31) if pruner.step(i)] == [7, 11, 15, 19, 23, 27, 30]
    assert pruner.last_event == 30


def test_event_prunes_smallest_with_one_threshold_per_group():
    actor, _, _ = make_actor()
    before = flat_weights(actor).clone()
    schedule = make_schedule("constant", [0.3, 0.6, 0.9], groups=GROUPS, i_end=2)
    pruner = Pruner(actor, WEIGHTS, schedule, total_iterations=10)
    pruner.apply(schedule.p_final)
    after = flat_weights(actor)
    for g, p in enumerate([0.3, 0.6, 0.9]):
        n_prune = round(p * weight_count())
        pruned = after[g] == 0
        assert int(pruned.sum()) == n_prune
        assert before[g][pruned].abs().max() <= before[g][~pruned].abs().min()  # one threshold over all matrices
        assert torch.equal(after[g][~pruned], before[g][~pruned])
    # Per-matrix counts differ from the pooled ones: matrices are ranked together.
    per_matrix = pruner.sparsity_per_matrix()
    assert len({round(float(v[2]), 6) for v in per_matrix.values()}) > 1


def test_per_matrix_mode_counts():
    actor, _, _ = make_actor()
    p = [0.25, 0.5, 0.9]
    schedule = make_schedule("constant", p, groups=GROUPS, i_end=2)
    pruner = Pruner(actor, WEIGHTS, schedule, total_iterations=10, per_matrix=True)
    pruner.apply(schedule.p_final)
    params = dict(actor.named_parameters())
    for name in WEIGHTS:
        w = params[name].detach().reshape(GROUPS, -1)
        assert torch.equal((w == 0).sum(1), prune_counts(torch.tensor(p), GROUPS, w.shape[1])), name


def test_regrow_mode_weights_grow_back_and_adam_state_is_reset():
    actor, x, target = make_actor()
    optimizer = torch.optim.Adam(actor.parameters(), lr=0.05)
    train(actor, optimizer, x, target, 3)  # non-zero Adam moments everywhere
    schedule = make_schedule("constant", 0.6, groups=GROUPS, i_end=2)
    pruner = Pruner(actor, WEIGHTS, schedule, mode="regrow", total_iterations=100, optimizer=optimizer)
    pruner.apply(0.6)
    params = dict(actor.named_parameters())
    zeroed = {n: params[n].detach() == 0 for n in WEIGHTS}
    for n in WEIGHTS:
        state = optimizer.state[params[n]]
        assert (state["exp_avg"][zeroed[n]] == 0).all() and (state["exp_avg_sq"][zeroed[n]] == 0).all()
        assert (state["exp_avg"][~zeroed[n]] != 0).any()
        assert int(state["step"]) == 3  # the step count is left alone
    assert all(m.any() for m in zeroed.values())
    assert all(getattr(actor.lstm, f"weight_{k}_l{l}_mask") is None for k in ("ih", "hh") for l in (0, 1))
    train(actor, optimizer, x, target, 10)
    regrown = sum(int((params[n].detach()[zeroed[n]] != 0).sum()) for n in WEIGHTS)
    assert regrown > 0.5 * sum(int(m.sum()) for m in zeroed.values())  # zeroed weights train between events
    pruner.apply(0.6)  # the next event re-ranks everything: some zeroed weights survive it
    survivors = sum(int((params[n].detach()[zeroed[n]] != 0).sum()) for n in WEIGHTS)
    print("regrown", regrown, "survivors of the next event", survivors)
    assert survivors > 0
    assert torch.equal(pruner.sparsity(), torch.full((GROUPS,), round(0.6 * weight_count()) / weight_count(), dtype=torch.float64))


def test_masked_mode_pruned_weights_stay_zero_and_come_back_when_target_falls():
    actor, x, target = make_actor()
    optimizer = torch.optim.Adam(actor.parameters(), lr=0.05)
    train(actor, optimizer, x, target, 3)  # non-zero Adam moments: without the reset they would move weight_orig
    schedule = make_schedule("constant", 0.7, groups=GROUPS, i_end=2)
    pruner = Pruner(actor, WEIGHTS, schedule, mode="masked", total_iterations=100, optimizer=optimizer)
    params = dict(actor.named_parameters())
    masks = {n: getattr(actor.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2] + "_mask") for n in WEIGHTS}
    # bool masks of the weights' shapes, all kept before the first event
    assert all(m.dtype == torch.bool and m.shape == params[n].shape and m.all() for n, m in masks.items())
    pruner.apply(0.7)
    orig = {n: params[n].detach().clone() for n in WEIGHTS}
    pruned = {n: ~masks[n] for n in WEIGHTS}
    assert torch.equal(pruner.sparsity(), torch.full((GROUPS,), round(0.7 * weight_count()) / weight_count(), dtype=torch.float64))
    train(actor, optimizer, x, target, 8)
    for n in WEIGHTS:
        assert (params[n].grad[pruned[n]] == 0).all()  # the ops apply the mask: no gradient
        assert torch.equal(params[n].detach()[pruned[n]], orig[n][pruned[n]])  # weight_orig frozen, no stale momentum
        assert (params[n].detach()[~pruned[n]] != orig[n][~pruned[n]]).any()  # the kept ones train
        assert ((params[n].detach() * masks[n])[pruned[n]] == 0).all()
    assert torch.equal(pruner.sparsity(), torch.full((GROUPS,), round(0.7 * weight_count()) / weight_count(), dtype=torch.float64))
    # The target falls: the pruned weights with the largest |weight_orig| come back.
    was_pruned = torch.cat([pruned[n].reshape(GROUPS, -1) for n in WEIGHTS], dim=1)
    magnitude = torch.cat([params[n].detach().abs().reshape(GROUPS, -1) for n in WEIGHTS], dim=1)
    pruner.apply(0.4)
    kept = torch.cat([(masks[n] != 0).reshape(GROUPS, -1) for n in WEIGHTS], dim=1)
    for g in range(GROUPS):
        assert int((~kept[g]).sum()) == round(0.4 * weight_count())
        assert magnitude[g][~kept[g]].max() <= magnitude[g][kept[g]].min()  # ranked on |weight_orig| of all
        back = was_pruned[g] & kept[g]
        assert int(back.sum()) >= round(0.7 * weight_count()) - round(0.4 * weight_count())
        assert torch.equal(flat_weights(actor, pruner)[g][back], flat_weights(actor)[g][back])  # with their old values
        assert (flat_weights(actor, pruner)[g][back] != 0).all()


def test_masked_mode_resumes_from_state_dicts():
    def run(stop=None, resume=None):
        actor, x, target = make_actor()
        optimizer = torch.optim.Adam(actor.parameters(), lr=0.02)
        schedule = make_schedule("harmonic", 0.8, groups=GROUPS, i_end=20, period=6)
        pruner = Pruner(actor, WEIGHTS, schedule, mode="masked", i_prune=3, total_iterations=20, optimizer=optimizer)
        start = 1
        if resume is not None:
            actor.load_state_dict(resume["actor"])  # mask buffers exist from construction, so strict loading works
            optimizer.load_state_dict(resume["optimizer"])
            pruner.load_state_dict(resume["pruner"])
            start = pruner.schedule.last_iteration + 1
        for i in range(start, 21):
            train(actor, optimizer, x, target, 1)
            pruner.step(i)
            if i == stop:
                return {"actor": actor.state_dict(), "optimizer": optimizer.state_dict(), "pruner": pruner.state_dict()}
        return actor.state_dict()

    straight = run()
    resumed = run(resume=run(stop=8))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_step_must_follow_the_iterations():
    actor, _, _ = make_actor()
    pruner = Pruner(actor, WEIGHTS, make_schedule("linear", 0.5, groups=GROUPS, i_end=10), total_iterations=10)
    pruner.step(1)
    with pytest.raises(ValueError, match="iteration must be the next one, 2"):
        pruner.step(3)


@pytest.mark.parametrize(
    "names, kwargs, match",
    [
        (["lstm.bias_l0"], {}, "biases are never pruned"),
        (["head.bias"], {}, "biases are never pruned"),
        (["lstm.weight_xx"], {}, "not a parameter"),
        ([], {}, "at least one weight, each once"),
        (["head.weight", "head.weight"], {}, "at least one weight, each once"),
        (WEIGHTS, {"mode": "sticky"}, "mode must be one of regrow, masked"),
        (WEIGHTS, {"i_prune": 0}, "i_prune"),
        (WEIGHTS, {"total_iterations": 0}, "total_iterations"),
    ],
)
def test_bad_arguments(names, kwargs, match):
    actor, _, _ = make_actor()
    schedule = make_schedule("linear", 0.5, groups=GROUPS, i_end=10)
    with pytest.raises(ValueError, match=match):
        Pruner(actor, names, schedule, **({"total_iterations": 10} | kwargs))


def test_wrong_group_count_and_missing_mask_buffer():
    actor, _, _ = make_actor()
    with pytest.raises(ValueError, match=r"grouped weight of shape \[2, ...\]"):
        Pruner(actor, WEIGHTS, make_schedule("linear", 0.5, groups=2, i_end=10), total_iterations=10)
    plain = nn.Module()
    plain.weight = nn.Parameter(torch.ones(GROUPS, 4, 4))
    with pytest.raises(ValueError, match="weight_mask"):
        Pruner(plain, ["weight"], make_schedule("linear", 0.5, groups=GROUPS, i_end=10), mode="masked", total_iterations=10)
