"""The op schemas written in Python (used when the extension is missing) are the C++ ones, and the
pure-PyTorch fallback kernels (forward and backward) agree with autograd through the twins."""

import pytest
import torch

from hapruned import HAS_EXTENSION
from hapruned.ops import reference
from hapruned.ops.library import SCHEMAS


@pytest.mark.skipif(not HAS_EXTENSION, reason="compares with the compiled extension's schemas")
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_python_schema_is_the_compiled_one(name):
    assert str(getattr(torch.ops.hapruned, name).default._schema) == f"hapruned::{name}{SCHEMAS[name]}"


def test_every_compiled_op_has_a_python_schema():
    if not HAS_EXTENSION:
        pytest.skip("no compiled extension to list")
    compiled = {name for name in dir(torch.ops.hapruned) if hasattr(getattr(torch.ops.hapruned, name), "default")}
    assert compiled == set(SCHEMAS)


def lstm_inputs(T, G, B, I, H, mask_dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    x, h0, c0 = rand(T, G, B, I), rand(G, B, H), rand(G, B, H)
    w_ih, w_hh, bias = 0.5 * rand(G, 4 * H, I), 0.5 * rand(G, 4 * H, H), rand(G, 4 * H)
    masks = [torch.rand(w.shape, generator=gen) < 0.6 for w in (w_ih, w_hh)]
    if mask_dtype is not None:
        masks = [m.to(mask_dtype) for m in masks]
    else:
        masks = [None, None]
    return x, h0, c0, w_ih, w_hh, bias, masks


def autograd_sequence(x, h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh):
    """Every hidden and cell state of the autograd twin, stepped cell by cell."""
    h, c, ys, cs = h0, c0, [], []
    for x_t in x:
        h, c = reference.reference_masked_lstm_cell(x_t, h, c, w_ih, w_hh, bias, mask_ih, mask_hh)
        ys.append(h)
        cs.append(c)
    return torch.stack(ys), torch.stack(cs)


@pytest.mark.parametrize("mask_dtype", [None, torch.bool, torch.float64])
@pytest.mark.parametrize("T", [1, 4])
def test_fallback_kernels_agree_with_autograd_through_the_twin(mask_dtype, T):
    x, h0, c0, w_ih, w_hh, bias, (mask_ih, mask_hh) = lstm_inputs(T, 3, 2, 5, 4, mask_dtype)
    leaves = [t.requires_grad_() for t in (x, h0, c0, w_ih, w_hh, bias)]
    y_ref, cs_ref = autograd_sequence(x, h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh)
    grad_y, grad_cs = torch.randn_like(y_ref), torch.randn_like(cs_ref)
    expected = torch.autograd.grad((y_ref * grad_y).sum() + (cs_ref * grad_cs).sum(), leaves)

    with torch.no_grad():
        y, cs, gates = reference.reference_masked_lstm_seq_forward(x, h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(cs, cs_ref)
        got = reference.reference_masked_lstm_seq_backward(grad_y, grad_cs, x, h0, c0, w_ih, w_hh, mask_ih, mask_hh,
                                                           y, cs, gates)
        for name, a, b in zip(("x", "h0", "c0", "w_ih", "w_hh", "bias"), got, expected):
            torch.testing.assert_close(a, b, msg=f"grad {name}")

        # the single-step fallbacks, on the first step
        h1, c1, gates1 = reference.reference_masked_lstm_cell_forward(x[0], h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh)
        torch.testing.assert_close(h1, y[0])
        torch.testing.assert_close(c1, cs[0])
    step = reference.reference_masked_lstm_cell(x[0], h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh)
    expected = torch.autograd.grad((step[0] * grad_y[0]).sum() + (step[1] * grad_cs[0]).sum(), leaves)
    expected = (expected[0][0], *expected[1:])  # x's gradient of the first step only
    got = reference.reference_masked_lstm_cell_backward(grad_y[0], grad_cs[0], x[0], h0, c0, w_ih, w_hh,
                                                        mask_ih, mask_hh, gates1, c1)
    for name, a, b in zip(("x", "h", "c", "w_ih", "w_hh", "bias"), got, expected):
        torch.testing.assert_close(a, b, msg=f"cell grad {name}")


def test_fallback_prune_kernel_is_the_twins_mask():
    weight = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    n_prune = torch.tensor([0, 17, 50])
    keep = reference.reference_keep_mask(weight, n_prune)
    assert (~keep).sum(1).tolist() == [0, 17, 50]
    sparsity = torch.tensor([0.0, 17 / 50, 1.0], dtype=torch.float64)
    assert torch.equal(keep, reference.reference_magnitude_prune_mask(weight, sparsity))
