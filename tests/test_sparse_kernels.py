"""The sparse training ops (sparse_lstm, sparse_lstm_cell, sparse_linear) against their reference twins
and the dense masked ops, under every instruction set this CPU has; gradcheck, opcheck; the layout; the
grouped modules' choice of path; the instruction-set override; and bad input."""

import os
import sys

import pytest
import torch

import hapruned
from hapruned import nn as hnn
from hapruned import ops

import processes

pytestmark = pytest.mark.skipif(not hapruned.HAS_EXTENSION, reason="needs the compiled extension")

TOLERANCE = {torch.float32: {"atol": 3e-5, "rtol": 1e-4}, torch.float64: {"atol": 1e-10, "rtol": 1e-9}}


@pytest.fixture(params=ops.CPU_ISAS)
def isa(request):
    """Runs a test under each instruction set of the CPU kernels that this CPU has (skipped otherwise)."""
    if request.param not in ops.supported_cpu_isas():
        pytest.skip(f"this CPU lacks {request.param}")
    previous = ops.cpu_isa()
    ops.set_cpu_isa(request.param)
    try:
        yield request.param
    finally:
        ops.set_cpu_isa(previous)


def _pattern(shape, density, gen):
    """A random keep-pattern keeping round(density * n) entries per group, some rows empty at low density."""
    groups, n = shape[0], shape[1] * shape[2]
    keep = ops.reference_magnitude_prune_mask(torch.rand(groups, n, generator=gen), 1.0 - density)
    return keep.view(shape)


def _lstm_inputs(steps, groups, batch, inputs, hidden, density, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(steps, groups, batch, inputs), (groups, batch, hidden), (groups, batch, hidden),
              (groups, 4 * hidden, inputs), (groups, 4 * hidden, hidden), (groups, 4 * hidden)]
    tensors = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    tensors[3] *= 0.5
    tensors[4] *= 0.3
    patterns = [_pattern(tensors[k].shape, density, gen) for k in (3, 4)]
    return tensors, patterns


def _outputs_and_grads(fn, tensors, extra):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    y, (h, c) = fn(*leaves, *extra)
    gen = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in (y, c))
    loss.backward()
    return [y.detach(), h.detach(), c.detach()], [leaf.grad for leaf in leaves]


def _assert_close(actual, expected, dtype, what):
    for k, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, e, **TOLERANCE[dtype], msg=lambda m: f"{what}[{k}]: {m}")


# (steps, groups, batch, inputs, hidden, density): the actors' shapes, awkward ones (H not a multiple of
# 16, B = 1, T = 1, G = 1, panels of several steps and batches wider than a panel), all-pruned and full
LSTM_CASES = [
    (4, 3, 5, 10, 128, 0.05),
    (1, 1, 1, 7, 13, 0.3),
    (7, 2, 1, 9, 11, 0.1),
    (3, 2, 130, 6, 5, 0.5),
    (33, 2, 3, 4, 17, 0.05),
    (2, 3, 4, 5, 6, 0.0),
    (2, 3, 4, 5, 6, 1.0),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps, groups, batch, inputs, hidden, density", LSTM_CASES)
def test_sparse_lstm_matches_reference_and_masked(isa, dtype, steps, groups, batch, inputs, hidden, density):
    tensors, patterns = _lstm_inputs(steps, groups, batch, inputs, hidden, density, dtype)
    layouts = [ops.sparse_layout(p) for p in patterns]
    out, grads = _outputs_and_grads(ops.sparse_lstm, tensors, layouts)
    ref_out, ref_grads = _outputs_and_grads(ops.reference_sparse_lstm, tensors, layouts)
    _assert_close(out + grads, ref_out + ref_grads, dtype, "sparse vs reference")
    masked_out, masked_grads = _outputs_and_grads(ops.masked_lstm, tensors, patterns)
    _assert_close(out + grads, masked_out + masked_grads, dtype, "sparse vs masked")
    for grad, pattern in zip(grads[3:5], patterns):  # a weight outside the pattern gets no gradient
        assert not grad[~pattern].any()


@pytest.mark.parametrize("batch", [1, 6, 200])
def test_sparse_lstm_cell_matches_masked_cell(isa, batch):
    tensors, patterns = _lstm_inputs(1, 3, batch, 10, 19, 0.1, torch.float64)
    tensors[0] = tensors[0][0]
    layouts = [ops.sparse_layout(p) for p in patterns]

    def run(fn, extra):
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        h, c = fn(*leaves, *extra)
        (h * 0.7 + c * 1.3).sum().backward()
        return [h.detach(), c.detach()] + [leaf.grad for leaf in leaves]

    _assert_close(run(ops.sparse_lstm_cell, layouts), run(ops.masked_lstm_cell, patterns), torch.float64, "cell")
    _assert_close(run(ops.sparse_lstm_cell, layouts), run(ops.reference_sparse_lstm_cell, layouts), torch.float64,
                  "cell vs reference")


@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(1, 3, 4, 10, 6), (5, 2, 1, 128, 7), (2, 1, 3, 5, 1)])
def test_sparse_linear_matches_reference_and_dense(isa, density, shape):
    rows, groups, batch, inputs, outputs = shape
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(rows, groups, batch, inputs, generator=gen, dtype=torch.float64)
    weight = torch.randn(groups, outputs, inputs, generator=gen, dtype=torch.float64)
    bias = torch.randn(groups, outputs, generator=gen, dtype=torch.float64)
    pattern = _pattern(weight.shape, density, gen)
    layout = ops.sparse_layout(pattern)

    def run(fn):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = fn(*leaves)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        return [out.detach()] + [leaf.grad for leaf in leaves]

    sparse = run(lambda x, w, b: ops.sparse_linear(x, w, b, layout))
    _assert_close(sparse, run(lambda x, w, b: ops.reference_sparse_linear(x, w, b, layout)), torch.float64, "linear")
    dense = run(lambda x, w, b: torch.matmul(x, (w * pattern).transpose(-1, -2)) + b.unsqueeze(-2))
    _assert_close(sparse, dense, torch.float64, "linear vs dense")


def test_gradcheck(isa):
    tensors, patterns = _lstm_inputs(3, 2, 2, 3, 4, 0.5, torch.float64)
    layouts = [ops.sparse_layout(p) for p in patterns]
    leaves = [t.requires_grad_() for t in tensors]

    def seq(*args):
        y, (_, c) = ops.sparse_lstm(*args, *layouts)
        return y, c

    # the gradients of weights outside the patterns are zero, as their finite differences are
    assert torch.autograd.gradcheck(seq, leaves)
    cell_leaves = [leaves[0][0].detach().requires_grad_()] + leaves[1:]
    assert torch.autograd.gradcheck(lambda *a: ops.sparse_lstm_cell(*a, *layouts), cell_leaves)
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    layout = ops.sparse_layout(_pattern(weight.shape, 0.4, gen))
    linear_args = [torch.randn(2, 2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True), weight,
                   torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(lambda *a: ops.sparse_linear(*a, layout), linear_args)


def test_opcheck(isa):
    for steps, batch in ((1, 1), (3, 2), (40, 5)):
        tensors, patterns = _lstm_inputs(steps, 2, batch, 3, 4, 0.5)
        layouts = [ops.sparse_layout(p) for p in patterns]
        args = [t.requires_grad_() for t in tensors] + layouts
        torch.library.opcheck(torch.ops.hapruned.sparse_lstm_seq.default, args)
        inference = [t.detach() for t in tensors] + layouts + [False]  # save=False: nothing for a backward
        torch.library.opcheck(torch.ops.hapruned.sparse_lstm_seq.default, inference)
        y, c_n, *saved = torch.ops.hapruned.sparse_lstm_seq(*(t.detach() for t in tensors), *layouts)
        backward_args = [torch.randn_like(y), torch.randn_like(c_n), tensors[3].detach(), tensors[4].detach(),
                         *layouts, *saved]
        torch.library.opcheck(torch.ops.hapruned.sparse_lstm_seq_backward.default, backward_args)
        backward_args[1] = None
        torch.library.opcheck(torch.ops.hapruned.sparse_lstm_seq_backward.default, backward_args)
    gen = torch.Generator().manual_seed(4)
    weight = torch.randn(2, 3, 5, generator=gen, requires_grad=True)
    layout = ops.sparse_layout(_pattern(weight.shape, 0.4, gen))
    x = torch.randn(2, 2, 3, 5, generator=gen, requires_grad=True)
    bias = torch.randn(2, 3, generator=gen, requires_grad=True)
    torch.library.opcheck(torch.ops.hapruned.sparse_linear.default, [x, weight, bias, layout])
    torch.library.opcheck(torch.ops.hapruned.sparse_linear_backward.default,
                          [torch.randn(2, 2, 3, 3, generator=gen), x.detach(), weight.detach(), layout])


def test_reference_seq_ops_match_the_compiled_ones():
    """The reference twins of the raw forward/backward pair (the kernels of devices without one) return
    what the compiled kernels return, saved arrays included."""
    tensors, patterns = _lstm_inputs(9, 2, 3, 5, 7, 0.3, torch.float64)
    layouts = [ops.sparse_layout(p) for p in patterns]
    compiled = torch.ops.hapruned.sparse_lstm_seq(*tensors, *layouts)
    reference = ops.reference.reference_sparse_lstm_seq_forward(*tensors, *layouts)
    _assert_close(compiled, reference, torch.float64, "forward")
    grad_y, grad_c_n = torch.randn_like(compiled[0]), torch.randn_like(compiled[1])
    args = (grad_y, grad_c_n, tensors[3], tensors[4], *layouts, *compiled[2:])
    _assert_close(torch.ops.hapruned.sparse_lstm_seq_backward(*args),
                  ops.reference.reference_sparse_lstm_seq_backward(*args), torch.float64, "backward")


def test_pruned_weights_are_never_read():
    """A NaN in a pruned weight changes nothing (the masked ops multiply it, and give NaN)."""
    tensors, patterns = _lstm_inputs(3, 2, 4, 5, 6, 0.2)
    layouts = [ops.sparse_layout(p) for p in patterns]
    out, grads = _outputs_and_grads(ops.sparse_lstm, tensors, layouts)
    for k, pattern in ((3, patterns[0]), (4, patterns[1])):
        tensors[k] = tensors[k].masked_fill(~pattern, float("nan"))
    nan_out, nan_grads = _outputs_and_grads(ops.sparse_lstm, tensors, layouts)
    _assert_close(nan_out + grads, out + grads, torch.float32, "NaN outside the pattern")


def test_layout_round_trip_and_orders():
    gen = torch.Generator().manual_seed(5)
    pattern = _pattern((3, 8, 5), 0.3, gen)
    pattern[1] = False  # an all-pruned group
    pattern[2, 3] = False  # an empty row
    layout = ops.sparse_layout(pattern)
    assert layout.dtype == torch.int32
    assert torch.equal(ops.layout_pattern(layout, pattern.shape), pattern)
    groups, rows, cols = pattern.shape
    nnz = int(pattern.sum())
    col_ptr = layout[groups * rows + 1: groups * rows + groups * cols + 2]
    row_idx = layout[-nnz:]
    by_columns = pattern.transpose(1, 2).nonzero()
    assert torch.equal(col_ptr.diff(), pattern.sum(1).flatten().int())
    assert torch.equal(row_idx.long(), by_columns[:, 2])


@pytest.mark.parametrize("corrupt, message", [
    (lambda layout: layout.long(), "int32"),
    (lambda layout: layout[:-1], "does not fit"),
    (lambda layout: layout.view(1, -1), "1-D"),
])
def test_bad_layout_names_the_argument(corrupt, message):
    tensors, patterns = _lstm_inputs(2, 2, 3, 4, 5, 0.5)
    layouts = [ops.sparse_layout(p) for p in patterns]
    with pytest.raises(ValueError, match=f"layout_ih.*{message}|{message}.*layout_ih|layout_ih must be"):
        ops.sparse_lstm(*tensors, corrupt(layouts[0]), layouts[1])


def test_compiled_op_checks_the_layout():
    tensors, patterns = _lstm_inputs(2, 2, 3, 4, 5, 0.5)
    layout_ih, layout_hh = (ops.sparse_layout(p) for p in patterns)
    bad = layout_ih.clone()
    bad[2 * 20 + 1 + 2 * 4 + 1] = 4  # the first column index (after the pointers) past the 4 inputs
    with pytest.raises(RuntimeError, match="layout_ih: column indices must lie in"):
        torch.ops.hapruned.sparse_lstm_seq(*tensors, bad, layout_hh)
    bad = layout_hh.clone()
    bad[0] = 1  # row pointers must start at 0
    with pytest.raises(RuntimeError, match="layout_hh: row and column pointers"):
        torch.ops.hapruned.sparse_lstm_seq(*tensors, layout_ih, bad)


def test_sparse_layout_rejects_non_patterns():
    with pytest.raises(ValueError, match="pattern must be a 3-D bool tensor"):
        ops.sparse_layout(torch.ones(2, 3))
    with pytest.raises(ValueError, match="pattern must be a 3-D bool tensor"):
        ops.sparse_layout(torch.ones(2, 3, 4))


# ---- The grouped modules -----------------------------------------------------------------------------------


def _masked_modules(density, seed=0):
    torch.manual_seed(seed)
    lstm, head = hnn.GroupedLSTM(4, 10, 24, 2), hnn.GroupedLinear(4, 24, 6)
    gen = torch.Generator().manual_seed(seed)
    for module, names in ((lstm, lstm.weight_names), (head, ("weight",))):
        for name in names:
            setattr(module, name + "_mask", _pattern(getattr(module, name).shape, density, gen))
    return lstm, head


def _run_modules(lstm, head, steps, batch):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(steps, 4, batch, 10, generator=gen)
    y, (h, c) = lstm(x)
    out = head(y)
    (out.sum() + c.sum()).backward()
    grads = [p.grad.clone() for p in (*lstm.parameters(), *head.parameters())]
    for p in (*lstm.parameters(), *head.parameters()):
        p.grad = None
    return [out.detach(), h.detach(), c.detach()] + grads


@pytest.mark.parametrize("steps, batch", [(1, 2), (1, 64), (12, 3)])
def test_modules_take_the_sparse_path_with_the_masked_results(isa, steps, batch, monkeypatch):
    """At 95% sparsity the modules run the sparse ops (seen by counting their calls), with the results
    of the masked ops (the same modules with the sparse path switched off)."""
    lstm, head = _masked_modules(0.05)
    calls = {"lstm": 0, "linear": 0}
    sparse_lstm, sparse_linear = ops.sparse_lstm, ops.sparse_linear

    def count(name, fn):
        def counted(*args):
            calls[name] += 1
            return fn(*args)
        return counted

    monkeypatch.setattr(ops, "sparse_lstm", count("lstm", sparse_lstm))
    monkeypatch.setattr(ops, "sparse_linear", count("linear", sparse_linear))
    sparse = _run_modules(lstm, head, steps, batch)
    assert calls == {"lstm": 2, "linear": 1}
    monkeypatch.setattr(hnn.grouped, "use_sparse", lambda density, batch: False)
    monkeypatch.setattr(hnn.grouped, "SPARSE_LINEAR_CROSSOVER", -1.0)
    masked = _run_modules(lstm, head, steps, batch)
    assert calls == {"lstm": 2, "linear": 1}
    _assert_close(sparse, masked, torch.float32, "modules")


def test_a_single_column_keeps_the_masked_lstm_step(monkeypatch):
    """At B = 1 the masked step measured faster at every density, so the LSTM layers take it."""
    assert not hnn.grouped.use_sparse(0.05, 1) and hnn.grouped.use_sparse(0.05, 2)
    lstm, head = _masked_modules(0.05)
    calls = []
    sparse_lstm = ops.sparse_lstm
    monkeypatch.setattr(ops, "sparse_lstm", lambda *args: calls.append(1) or sparse_lstm(*args))
    _run_modules(lstm, head, 1, 1)
    assert calls == []


def test_modules_keep_the_masked_path_when_dense():
    lstm, head = _masked_modules(0.9)
    assert all(lstm.sparse_layout(name) is None for name in lstm.weight_names)
    assert head.sparse_layout("weight") is None


def test_layouts_follow_the_masks():
    """A layout is rebuilt when a mask is assigned, by load_state_dict and after update_sparse_layouts;
    a mask changed in place without it is not used until then (the masked ops run)."""
    lstm, _ = _masked_modules(0.05)
    name = "weight_hh_l0"
    layout, _ = lstm.sparse_layout(name)
    mask = getattr(lstm, name + "_mask")
    kept = mask.clone()
    mask.fill_(True)
    assert lstm.sparse_layout(name) is None
    lstm.update_sparse_layouts()
    assert lstm.sparse_layout(name) is None  # now dense: the masked path
    mask.copy_(kept)
    mask[0].copy_(mask[1])
    lstm.update_sparse_layouts()
    rebuilt, _ = lstm.sparse_layout(name)
    assert torch.equal(ops.layout_pattern(rebuilt, mask.shape), mask)
    other, _ = _masked_modules(0.05, seed=1)
    other.load_state_dict(lstm.state_dict())
    assert torch.equal(other.sparse_layout(name)[0], rebuilt)
    assert not torch.equal(rebuilt, layout)


def test_non_finite_pruned_weights_keep_the_masked_semantics():
    lstm, _ = _masked_modules(0.05)
    with torch.no_grad():
        lstm.weight_ih_l0.masked_fill_(~lstm.weight_ih_l0_mask, float("inf"))
    lstm.update_sparse_layouts()
    assert lstm.sparse_layout("weight_ih_l0") is None
    y, _ = lstm(torch.randn(2, 4, 3, 10))
    assert y.isnan().any()  # as the masked op computes: inf * 0


# ---- The instruction set -------------------------------------------------------------------------------------


def test_isa_setter_validates():
    supported = ops.supported_cpu_isas()
    assert supported[-1] == "baseline" and ops.cpu_isa() in supported
    with pytest.raises(ValueError, match="isa must be one of .*, got 'sse9'"):
        ops.set_cpu_isa("sse9")
    missing = [isa for isa in ops.CPU_ISAS if isa not in supported]
    for isa in missing:
        with pytest.raises(ValueError, match=f"this CPU lacks {isa}"):
            ops.set_cpu_isa(isa)


def _import_with_isa(value):
    env = dict(os.environ, HAPRUNED_CPU_ISA=value)
    script = "from hapruned import ops; print(ops.cpu_isa())"
    return processes.run([sys.executable, "-c", script], timeout=300, env=env)


def test_isa_environment_variable():
    for isa in ops.supported_cpu_isas():
        result = _import_with_isa(isa)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == isa
    result = _import_with_isa("avx1024")
    assert result.returncode != 0
    assert "HAPRUNED_CPU_ISA" in result.stderr and "avx2" in result.stderr and "'avx1024'" in result.stderr


def test_training_with_sparse_actors_matches_the_masked_ops(monkeypatch):
    """PPO with actors held 95% sparse in masked mode trains the same weights through the sparse ops as
    through the masked ops, within floating-point order."""
    from hapruned.algos import IAGCPPO, TrainConfig

    config = TrainConfig(n_users=3, n_channels=2, horizon=8, hidden_size=16, envs_per_iteration=4, minibatches=2,
                         epochs=2, iterations=3, i_prune=1, method="constant", sparsity=0.95, prune_mode="masked")
    calls = []
    sparse_lstm = ops.sparse_lstm
    monkeypatch.setattr(ops, "sparse_lstm", lambda *args: calls.append(1) or sparse_lstm(*args))

    def train():
        algo = IAGCPPO(config)
        metrics = [algo.train_iteration(i) for i in (1, 2, 3)]
        return metrics, {k: v.detach().clone() for k, v in algo.actor.state_dict().items()}

    sparse_metrics, sparse_params = train()
    assert calls  # the actors ran the sparse ops
    monkeypatch.setattr(hnn.grouped, "use_sparse", lambda density, batch: False)
    monkeypatch.setattr(hnn.grouped, "SPARSE_LINEAR_CROSSOVER", -1.0)
    count = len(calls)
    masked_metrics, masked_params = train()
    assert len(calls) == count
    for key in masked_params:
        torch.testing.assert_close(sparse_params[key], masked_params[key], rtol=1e-3, atol=1e-5, msg=key)
    assert sparse_metrics[-1]["sparsity"] == masked_metrics[-1]["sparsity"]


# ---- The input's gradient, only where it is needed ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["sparse", "masked", "masked_cell"])
def test_backward_skips_the_input_gradient_it_is_not_asked_for(kind, monkeypatch):
    """With an input that needs no gradient the backward op is told so (input_grad=False: it returns an
    empty grad_x), and every other gradient is what it is when the input needs one."""
    tensors, patterns = _lstm_inputs(5, 3, 4, 30, 9, 0.1, torch.float64)
    layouts = [ops.sparse_layout(p) for p in patterns]
    if kind == "masked_cell":
        tensors[0] = tensors[0][0]
    op, extra, backward_name = {
        "sparse": (ops.sparse_lstm, layouts, "_sparse_seq_backward_op"),
        "masked": (ops.masked_lstm, patterns, "_seq_backward_op"),
        "masked_cell": (lambda *a: (None, ops.masked_lstm_cell(*a)), patterns, "_cell_backward_op"),
    }[kind]
    library = sys.modules["hapruned.ops.library"]
    backward = getattr(library, backward_name)
    seen = []

    def recording(*args):
        seen.append(args[-1])
        out = backward(*args)
        seen.append(out[0].shape)
        return out

    monkeypatch.setattr(library, backward_name, recording)

    def grads(x_needs_grad):
        leaves = [t.detach().clone().requires_grad_(k > 0 or x_needs_grad) for k, t in enumerate(tensors)]
        _, (h, c) = op(*leaves, *extra)
        (h * 0.5 + c).sum().backward()
        return [leaf.grad for leaf in leaves]

    with_x, without_x = grads(True), grads(False)
    assert seen[0] is True and seen[1] == tensors[0].shape
    assert seen[2] is False and seen[3] == (0,)
    assert without_x[0] is None and with_x[0] is not None
    _assert_close(without_x[1:], with_x[1:], torch.float64, "gradients without x's")


def test_opcheck_without_the_input_gradient():
    tensors, patterns = _lstm_inputs(3, 2, 2, 3, 4, 0.5)
    layouts = [ops.sparse_layout(p) for p in patterns]
    y, c_n, *saved = torch.ops.hapruned.sparse_lstm_seq(*tensors, *layouts)
    torch.library.opcheck(torch.ops.hapruned.sparse_lstm_seq_backward.default,
                          [torch.randn_like(y), torch.randn_like(c_n), tensors[3], tensors[4], *layouts, *saved, False])
    y, cs, gates = torch.ops.hapruned.masked_lstm_seq(*tensors, *patterns)
    torch.library.opcheck(torch.ops.hapruned.masked_lstm_seq_backward.default,
                          [torch.randn_like(y), torch.randn_like(cs), *tensors[:5], *patterns, y, cs, gates, False])
