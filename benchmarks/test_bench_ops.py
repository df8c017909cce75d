"""Speed of the compiled ops against their baselines, N = 10 groups, H = 128, I = 9.

Run: python -m pytest benchmarks/test_bench_ops.py --benchmark-group-by=group
Each group holds the kernel and its baselines, so the ratios come from one run. torch runs on a
fixed number of threads (THREADS). CUDA cases are marked and skipped without a GPU.
"""

import pytest
import torch

import hapruned
from hapruned import ops

GROUPS, HIDDEN, INPUT, SPARSITY = 10, 128, 9, 0.95
THREADS = 1


@pytest.fixture(scope="module", autouse=True)
def fixed_threads():
    previous = torch.get_num_threads()
    hapruned.set_num_threads(THREADS)
    yield
    torch.set_num_threads(previous)


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


def _lstm_cell_loop(tensors, masks):
    """Ten torch.nn.LSTMCell modules, weights pre-masked outside the timed call."""
    x, h, c, w_ih, w_hh, bias = tensors
    cells = []
    for g in range(GROUPS):
        cell = torch.nn.LSTMCell(INPUT, HIDDEN, device=x.device)
        with torch.no_grad():
            cell.weight_ih.copy_(w_ih[g] * masks[0][g])
            cell.weight_hh.copy_(w_hh[g] * masks[1][g])
            cell.bias_ih.copy_(bias[g])
            cell.bias_hh.zero_()
        cells.append(cell)
    return lambda: [cell(x[g], (h[g], c[g])) for g, cell in enumerate(cells)]


def _cell_step(kind, batch, device):
    tensors, masks = _lstm_args(batch, device)
    if kind == "lstm_cell_loop":
        return _lstm_cell_loop(tensors, masks)
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
@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("batch", [1, 256, 4096])
def test_cell_forward_cuda(benchmark, kind, batch):
    benchmark.group = f"cell forward cuda B={batch}"
    step = _cell_step(kind, batch, "cuda")

    def run():
        step()
        torch.cuda.synchronize()

    with torch.no_grad():
        benchmark(run)


def _training_step(kind, device, steps=100, batch=16):
    """Forward and backward of one masked layer through ``steps`` steps."""
    tensors, masks = _lstm_args(batch, device, steps=steps, requires_grad=True)
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
