"""The raw operators (torch.ops.hapruned.*, without the Python wrappers) on views of every argument:
each tensor a kernel reads is either checked (an error naming the argument) or read as its values."""

import pytest
import torch

import hapruned
from hapruned import ops

pytestmark = pytest.mark.skipif(not hapruned.HAS_EXTENSION, reason="needs the compiled extension")

G, B, I, H, T = 2, 3, 4, 5, 3


def _lstm_inputs(device, steps=None):
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device)

    x = randn(G, B, I) if steps is None else randn(steps, G, B, I)
    h, c = randn(G, B, H), randn(G, B, H)
    w_ih, w_hh, bias = randn(G, 4 * H, I), randn(G, 4 * H, H), randn(G, 4 * H)
    mask_ih = (torch.rand(G, 4 * H, I, generator=gen) > 0.5).to(device)  # one bool mask, one float mask
    mask_hh = (torch.rand(G, 4 * H, H, generator=gen) > 0.5).double().to(device)
    return x, h, c, w_ih, w_hh, bias, mask_ih, mask_hh


def _sample_args(op_name, device):
    """Valid arguments of each raw op, in schema order."""
    raw = torch.ops.hapruned
    if op_name == "magnitude_prune_mask":
        weight = torch.randn(G, 30, generator=torch.Generator().manual_seed(0)).to(device)
        return [weight, torch.tensor([3, 17], device=device)]
    if op_name in ("masked_lstm_cell", "masked_lstm_cell_backward"):
        args = _lstm_inputs(device)
        if op_name == "masked_lstm_cell":
            return list(args)
        h_new, c_new, gates = raw.masked_lstm_cell(*args)
        x, h, c, w_ih, w_hh, _, mask_ih, mask_hh = args
        return [torch.randn_like(h_new), torch.randn_like(c_new), x, h, c, w_ih, w_hh, mask_ih, mask_hh, gates, c_new]
    args = _lstm_inputs(device, steps=T)
    if op_name == "masked_lstm_seq":
        return list(args)
    y, cs, gates = raw.masked_lstm_seq(*args)
    x, h0, c0, w_ih, w_hh, _, mask_ih, mask_hh = args
    return [torch.randn_like(y), torch.randn_like(cs), x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates]


def _views(t):
    """Views of t of its shape: with a stride of 0, transposed (or strided, for 1-D) and at a storage offset."""
    padded = torch.cat([t.flatten()[:1], t.flatten()])
    return {
        "expanded": t[:1].expand_as(t),
        "transposed": torch.stack([t, t], -1)[..., 0] if t.ndim == 1 else t.transpose(-1, -2).contiguous().transpose(-1, -2),
        "offset": padded[1:].view_as(t),
    }


OPS = ["magnitude_prune_mask", "masked_lstm_cell", "masked_lstm_cell_backward", "masked_lstm_seq", "masked_lstm_seq_backward"]


@pytest.mark.parametrize("op_name", OPS)
def test_every_argument_as_a_view(op_name, device):
    op = getattr(torch.ops.hapruned, op_name).default
    names = [argument.name for argument in op._schema.arguments if not argument.has_default_value()]  # the tensors
    args = _sample_args(op_name, device)
    assert len(args) == len(names)
    for k, (name, arg) in enumerate(zip(names, args)):
        for kind, view in _views(arg).items():
            assert view.data_ptr() != arg.data_ptr() or not view.is_contiguous()
            print(f"{op_name}({name}={kind} view)")
            expected = op(*args[:k], view.contiguous(), *args[k + 1:])
            try:
                actual = op(*args[:k], view, *args[k + 1:])
            except RuntimeError as error:
                assert kind != "offset", f"{name}: a contiguous view at an offset was refused: {error}"
                assert f"{name} must be contiguous" in str(error)
                continue
            for a, e in zip(actual if isinstance(actual, tuple) else [actual], expected if isinstance(expected, tuple) else [expected]):
                torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"{op_name}: {name} as a {kind} view")


def test_prune_counts_from_views_are_read_as_values(device):
    """n_prune was read through its data pointer: an expanded [3] pruned [3, 0, 0, 0] or garbage."""
    weight = torch.randn(4, 10, generator=torch.Generator().manual_seed(0)).to(device)
    expanded = torch.tensor([3], device=device).expand(4)
    strided = torch.tensor([[2, 7], [4, 7], [6, 7], [8, 7]], device=device)[:, 0]
    for counts, expected in ((expanded, [3, 3, 3, 3]), (strided, [2, 4, 6, 8])):
        keep = torch.ops.hapruned.magnitude_prune_mask(weight, counts)
        assert (~keep).sum(1).tolist() == expected
        assert torch.equal(keep, ops.reference_magnitude_prune_mask(weight, torch.tensor(expected) / 10))
