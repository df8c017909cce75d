"""Speed of the sparse training ops against the dense masked ops and per-agent torch.nn modules: G = 10
groups, H = 128, 2 layers, input 10 (the actors' observation), masks 95% sparse (0% for the no-slower
check); and a whole training iteration with actors held 95% sparse against the same run dense.

    python -m pytest benchmarks/test_bench_sparse.py --benchmark-group-by=group --benchmark-min-rounds=5

Each group holds the sparse case and its baselines, so the ratios come from one run. torch runs on one
thread. The crossover densities of hapruned.nn.grouped come from the "crossover" groups.
"""

import pytest
import torch

from hapruned import nn as hnn
from hapruned import ops

GROUPS, HIDDEN, INPUT, LAYERS = 10, 128, 10, 2

pytestmark = pytest.mark.usefixtures("one_thread")


def _layers(density, batch, steps, requires_grad):
    """Two layers' weights, patterns (exactly round(density * n) kept per group), layouts, and x, h0, c0."""
    gen = torch.Generator().manual_seed(0)
    layers = []
    for k in range(LAYERS):
        inputs = INPUT if k == 0 else HIDDEN
        w_ih = 0.3 * torch.randn(GROUPS, 4 * HIDDEN, inputs, generator=gen)
        w_hh = 0.3 * torch.randn(GROUPS, 4 * HIDDEN, HIDDEN, generator=gen)
        bias = 0.1 * torch.randn(GROUPS, 4 * HIDDEN, generator=gen)
        patterns = [ops.magnitude_prune_mask(torch.rand(w.shape, generator=gen).flatten(1), 1.0 - density).view_as(w)
                    for w in (w_ih, w_hh)]
        weights = [t.requires_grad_(requires_grad) for t in (w_ih, w_hh, bias)]
        layers.append((weights, patterns, [ops.sparse_layout(p) for p in patterns]))
    x = torch.randn(steps, GROUPS, batch, INPUT, generator=gen)
    state = torch.zeros(GROUPS, batch, HIDDEN)
    return layers, x, state


def _stack(kind, layers, x, state):
    """The two layers through the sparse or the masked op -> (output, last cell state)."""
    out = x
    for weights, patterns, layouts in layers:
        if kind == "sparse":
            out, (_, c) = ops.sparse_lstm(out, state, state, *weights, *layouts)
        else:
            out, (_, c) = ops.masked_lstm(out, state, state, *weights, *patterns)
    return out, c


def _per_agent(module, layers, batch, steps):
    """GROUPS two-layer torch.nn.LSTM (or two stacked LSTMCell) per agent, pre-masked weights."""
    agents = []
    for g in range(GROUPS):
        cells = [module(INPUT if k == 0 else HIDDEN, HIDDEN) for k in range(LAYERS)]
        with torch.no_grad():
            for cell, ((w_ih, w_hh, bias), (m_ih, m_hh), _) in zip(cells, layers):
                suffix = "_l0" if module is torch.nn.LSTM else ""
                getattr(cell, "weight_ih" + suffix).copy_(w_ih[g] * m_ih[g])
                getattr(cell, "weight_hh" + suffix).copy_(w_hh[g] * m_hh[g])
                getattr(cell, "bias_ih" + suffix).copy_(bias[g])
                getattr(cell, "bias_hh" + suffix).zero_()
        agents.append(cells)
    return agents


@pytest.mark.parametrize("kind", ["sparse", "masked", "lstm_loop"])
@pytest.mark.parametrize("density", [0.05, 1.0])
def test_sequence_forward_backward(benchmark, kind, density):
    """An actor's update: two layers forward and backward through T = 100 steps of B = 16."""
    benchmark.group = f"sequence+backward T=100 B=16 density={density}"
    if kind == "lstm_loop" and density == 1.0:
        pytest.skip("the per-agent baseline is timed at 95% sparsity")
    layers, x, state = _layers(density, 16, 100, requires_grad=True)
    if kind == "lstm_loop":
        agents = _per_agent(torch.nn.LSTM, layers, 16, 100)

        def step():
            loss = 0
            for g, (first, second) in enumerate(agents):
                out, _ = second(first(x[:, g])[0])
                loss = loss + out.square().mean()
            loss.backward()
    else:
        def step():
            out, c = _stack(kind, layers, x, state)
            (out.square().mean() + c.mean()).backward()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("kind", ["sparse", "masked", "lstm_cell_loop"])
@pytest.mark.parametrize("batch", [1, 16, 256])
def test_step_forward(benchmark, kind, batch):
    """A rollout step: two layers, one step, B agents' environments, no gradient, 95% sparse."""
    benchmark.group = f"step forward B={batch} density=0.05"
    layers, x, state = _layers(0.05, batch, 1, requires_grad=False)
    if kind == "lstm_cell_loop":
        agents = _per_agent(torch.nn.LSTMCell, layers, batch, 1)

        def step():
            for g, (first, second) in enumerate(agents):
                h, _ = first(x[0, g], (state[g], state[g]))
                second(h, (state[g], state[g]))
    else:
        def step():
            _stack(kind, layers, x, state)

    with torch.no_grad():
        benchmark(step)


CROSSOVER_DENSITIES = [0.05, 0.1, 0.2, 0.3, 0.5]


@pytest.mark.parametrize("kind", ["sparse", "masked"])
@pytest.mark.parametrize("density", CROSSOVER_DENSITIES)
@pytest.mark.parametrize("case", ["step B=1", "step B=16", "step B=256", "sequence+backward T=100 B=16"])
def test_crossover(benchmark, case, density, kind):
    """Where the sparse ops stop being faster, by density: rollout steps and the update's sequence."""
    benchmark.group = f"crossover {case} density={density}"
    batch = int(case.rsplit("B=", 1)[1])
    if case.startswith("step"):
        layers, x, state = _layers(density, batch, 1, requires_grad=False)
        with torch.no_grad():
            benchmark(lambda: _stack(kind, layers, x, state))
        return
    layers, x, state = _layers(density, batch, 100, requires_grad=True)

    def step():
        out, c = _stack(kind, layers, x, state)
        (out.square().mean() + c.mean()).backward()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_head_forward_backward(benchmark, kind):
    """The actors' head (K + 1 = 6 outputs) on T*B = 1600 rows, 95% sparse."""
    benchmark.group = "head forward+backward 1600 rows density=0.05"
    torch.manual_seed(0)
    head = hnn.GroupedLinear(GROUPS, HIDDEN, 6)
    head.weight_mask = ops.magnitude_prune_mask(torch.rand(GROUPS, HIDDEN * 6), 0.95).view(GROUPS, 6, HIDDEN)
    if kind == "dense":
        hnn.grouped.SPARSE_LINEAR_CROSSOVER, saved = -1.0, hnn.grouped.SPARSE_LINEAR_CROSSOVER
    x = torch.randn(100, GROUPS, 16, HIDDEN, requires_grad=True)
    try:
        benchmark(lambda: head(x).square().mean().backward())
    finally:
        if kind == "dense":
            hnn.grouped.SPARSE_LINEAR_CROSSOVER = saved


@pytest.mark.benchmark(group="train-iteration sparse actors")
@pytest.mark.parametrize("method", ["dense", "constant"])
def test_train_iteration(benchmark, method):
    """One IAGC-PPO iteration (rollout + update + prune event) of the benchmark configuration of
    test_bench_train.py, actors dense or held 95% sparse (constant, i_prune 1, masked mode: a pruned
    weight gets no gradient, so the sparse ops train it exactly)."""
    from test_bench_train import BENCH_CONFIG

    from hapruned.algos.config import TrainConfig
    from hapruned.algos.ppo import IAGCPPO

    config = TrainConfig.preset("fast", **{**BENCH_CONFIG, "method": method, "prune_mode": "masked", "i_prune": 1},
                                device="cpu")
    algo = IAGCPPO(config)
    iteration = iter(range(1, 1_000_000))
    algo.train_iteration(next(iteration))  # the first prune event: the actors are 95% sparse from here
    benchmark.pedantic(lambda: algo.train_iteration(next(iteration)), rounds=3, iterations=1, warmup_rounds=1)
