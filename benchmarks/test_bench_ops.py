"""Speed of the compiled ops against their baselines, N = 10 groups, H = 128, I = 9.

Run: python -m pytest benchmarks/test_bench_ops.py --benchmark-group-by=group
Each group holds the kernel and its baselines, so the ratios come from one run. torch runs on a
single thread (the one_thread fixture). CUDA cases are marked and skipped without a GPU.
"""

import pytest
import torch

from hapruned import ops

GROUPS, HIDDEN, INPUT, SPARSITY = 10, 128, 9, 0.95

pytestmark = pytest.mark.usefixtures("one_thread")


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _lstm_args(batch, device, steps=None, requires_grad=False):
    gen = torch.Generator().manual_seed(0)
    x_shape = (GROUPS, batch, INPUT) if steps is None else (steps, GROUPS, batch, INPUT)
    shapes = [x_shape, (GROUPS, batch, HIDDEN), (GROUPS, batch, HIDDEN), (GROUPS, 4 * HIDDEN, INPUT),
              (GROUPS, 4 * HIDDEN, HIDDEN), (GROUPS, 4 * HIDDEN)]
    tensors = [(0.3 * torch.randn(s, generator=gen)).to(device).requires_grad_(requires_grad) for s in shapes]
    masks = [ops.magnitude_prune_mask(w.detach().flatten(1), SPARSITY).view_as(w) for w in tensors[3:5]]
    return tensors, masks


def _per_agent_loop(tensors, masks, module):
    """One torch.nn.LSTMCell or (cuDNN on a GPU) one-step torch.nn.LSTM per agent, weights pre-masked
    outside the timed call."""
    x, h, c, w_ih, w_hh, bias = tensors
    cells = []
    for g in range(GROUPS):
        cell = module(INPUT, HIDDEN, device=x.device)
        with torch.no_grad():
            for name, value in (("weight_ih", w_ih[g] * masks[0][g]), ("weight_hh", w_hh[g] * masks[1][g]),
                                ("bias_ih", bias[g]), ("bias_hh", torch.zeros_like(bias[g]))):
                getattr(cell, name if module is torch.nn.LSTMCell else name + "_l0").copy_(value)
        cells.append(cell)
    if module is torch.nn.LSTMCell:
        return lambda: [cell(x[g], (h[g], c[g])) for g, cell in enumerate(cells)]
    h1, c1, x1 = h[:, None], c[:, None], x[:, None]  # one step, the agent's batch as nn.LSTM's
    return lambda: [cell(x1[g], (h1[g], c1[g])) for g, cell in enumerate(cells)]


def _cell_step(kind, batch, device, mask_dtype=torch.bool):
    tensors, masks = _lstm_args(batch, device)
    masks = [m.to(mask_dtype) for m in masks]
    if kind in ("lstm_cell_loop", "lstm_loop"):
        return _per_agent_loop(tensors, masks, torch.nn.LSTMCell if kind == "lstm_cell_loop" else torch.nn.LSTM)
    op = ops.masked_lstm_cell if kind == "fused" else ops.reference_masked_lstm_cell
    return lambda: op(*tensors, *masks)


CELL_KINDS = ["fused", "reference", "lstm_cell_loop"]


@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("batch", [1, 64])
def test_cell_forward_cpu(benchmark, kind, batch):
    benchmark.group = f"cell forward cpu B={batch}"
    step = _cell_step(kind, batch, "cpu")
    with torch.no_grad():
        benchmark(step)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["fused", "lstm_cell_loop", "lstm_loop"])
@pytest.mark.parametrize("batch", [1, 16, 256, 1024, 4096])
def test_cell_forward_cuda(benchmark, kind, batch):
    benchmark.group = f"cell forward cuda B={batch}"
    step = _cell_step(kind, batch, "cuda")

    def run():
        step()
        torch.cuda.synchronize()

    with torch.no_grad():
        benchmark(run)


def _training_step(kind, device, steps=100, batch=16, mask_dtype=torch.bool):
    """Forward and backward of one masked layer through ``steps`` steps."""
    tensors, masks = _lstm_args(batch, device, steps=steps, requires_grad=True)
    masks = [m.to(mask_dtype) for m in masks]
    x, h, c, w_ih, w_hh, bias = tensors

    def by_cells(cell):
        h_t, c_t, outputs = h, c, []
        for x_t in x:
            h_t, c_t = cell(x_t, h_t, c_t, w_ih, w_hh, bias, *masks)
            outputs.append(h_t)
        return torch.stack(outputs)

    forward = {
        "fused_sequence": lambda: ops.masked_lstm(*tensors, *masks)[0],
        "fused_cell_loop": lambda: by_cells(ops.masked_lstm_cell),
        "reference": lambda: by_cells(ops.reference_masked_lstm_cell),
    }[kind]

    def step():
        forward().square().mean().backward()
        _sync(device)

    return step


TRAIN_KINDS = ["fused_sequence", "fused_cell_loop", "reference"]


@pytest.mark.parametrize("kind", TRAIN_KINDS)
def test_training_step_cpu(benchmark, kind):
    benchmark.group = "training step cpu T=100 B=16"
    benchmark.pedantic(_training_step(kind, "cpu"), rounds=5, warmup_rounds=1)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", TRAIN_KINDS)
def test_training_step_cuda(benchmark, kind):
    benchmark.group = "training step cuda T=100 B=16"
    benchmark.pedantic(_training_step(kind, "cuda"), rounds=10, warmup_rounds=2)


MASK_CASES = ["cell B=1", "cell B=16", "cell B=64", "cell+backward B=16", "sequence T=100 B=16",
              "sequence+backward T=100 B=16"]


@pytest.mark.parametrize("mask_dtype", ["bool", "float"])
@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_dtype_cpu(benchmark, case, mask_dtype):
    """Float 0/1 masks (torch.nn.utils.prune's weight_mask) against bool masks, on every path."""
    benchmark.group = f"mask dtype cpu {case}"
    dtype = torch.bool if mask_dtype == "bool" else torch.float32
    batch = int(case.rsplit("B=", 1)[1])
    if case.startswith("cell") and "backward" not in case:
        step = _cell_step("fused", batch, "cpu", dtype)
        with torch.no_grad():
            benchmark(step)
        return
    if case.startswith("cell"):  # forward and backward of one step
        tensors, masks = _lstm_args(batch, "cpu", requires_grad=True)
        masks = [m.to(dtype) for m in masks]

        def step():
            h, c = ops.masked_lstm_cell(*tensors, *masks)
            (h.sum() + c.sum()).backward()

        benchmark(step)
        return
    if "backward" in case:
        benchmark.pedantic(_training_step("fused_sequence", "cpu", mask_dtype=dtype), rounds=5, warmup_rounds=1)
        return
    tensors, masks = _lstm_args(batch, "cpu", steps=100)
    masks = [m.to(dtype) for m in masks]
    with torch.no_grad():
        benchmark.pedantic(lambda: ops.masked_lstm(*tensors, *masks), rounds=10, warmup_rounds=1)


PRUNE_SIZE = 205_000


def _prune(kind, device):
    weight = torch.randn(GROUPS, PRUNE_SIZE, generator=torch.Generator().manual_seed(0)).to(device)
    n_prune = round(SPARSITY * PRUNE_SIZE)

    def topk_per_group():  # what torch.nn.utils.prune.l1_unstructured does, once per agent
        masks = []
        for w in weight:
            mask = torch.ones_like(w)
            mask[torch.topk(w.abs(), n_prune, largest=False).indices] = 0
            masks.append(mask)
        return masks

    run = {
        "fused": lambda: ops.magnitude_prune_mask(weight, SPARSITY),
        "topk_per_group": topk_per_group,
        "reference": lambda: ops.reference_magnitude_prune_mask(weight, SPARSITY),
        "copy_weights": weight.clone,  # reads the weights once: the bandwidth floor
    }[kind]

    def step():
        run()
        _sync(device)

    return step


@pytest.mark.parametrize("kind", ["fused", "topk_per_group", "reference"])
def test_prune_mask_cpu(benchmark, kind):
    benchmark.group = "prune mask cpu 10x205k p=0.95"
    benchmark.pedantic(_prune(kind, "cpu"), rounds=5, warmup_rounds=1)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["fused", "topk_per_group", "reference", "copy_weights"])
def test_prune_mask_cuda(benchmark, kind):
    benchmark.group = "prune mask cuda 10x205k p=0.95"
    benchmark.pedantic(_prune(kind, "cuda"), rounds=20, warmup_rounds=3)
