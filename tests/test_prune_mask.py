"""magnitude_prune_mask: exact counts, the tie rule, sparsity 0 and 1, per-group targets, and
bit-identical agreement with the reference twin."""

import pytest
import torch

from hapruned import ops


def test_matches_reference(device):
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for groups, size in ((1, 1), (3, 17), (10, 1001)):
            weight = torch.randn(groups, size, generator=gen, dtype=dtype).to(device)
            for sparsity in (0.0, 0.25, 0.5, 0.95, 1.0, torch.rand(groups, generator=gen)):
                keep = ops.magnitude_prune_mask(weight, sparsity)
                assert keep.dtype == torch.bool and keep.shape == weight.shape
                expected = ops.reference_magnitude_prune_mask(weight, sparsity)
                assert torch.equal(keep, expected), f"{dtype} {groups}x{size} sparsity={sparsity}"


def test_exact_counts(device):
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(4, 1000, generator=gen).to(device)
    sparsity = torch.tensor([0.0, 0.0625, 0.1875, 1.0], dtype=torch.float64)  # 62.5 and 187.5: half to even
    keep = ops.magnitude_prune_mask(weight, sparsity)
    assert (~keep).sum(1).tolist() == [0, 62, 188, 1000]
    # The pruned weights are the smallest: every kept magnitude >= every pruned one in its group.
    for g in (1, 2):
        magnitude = weight[g].abs()
        assert magnitude[keep[g]].min() >= magnitude[~keep[g]].max()


def test_ties(device):
    # All equal magnitudes (signs and -0.0 included): the lowest flat indices are pruned first.
    weight = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, 1.0], [0.0, -0.0, 2.0, 0.0, -2.0, 0.0]]).to(device)
    keep = ops.magnitude_prune_mask(weight, 0.5)
    assert keep.tolist() == [[False, False, False, True, True, True], [False, False, True, False, True, True]]
    # Ties straddling the threshold among distinct values.
    weight = torch.tensor([[3.0, 1.0, 2.0, -1.0, 2.0, -2.0, 1.0, 3.0]]).to(device)
    keep = ops.magnitude_prune_mask(weight, 5 / 8)  # prune 1, -1, 1, then the two lowest-index |2|
    assert keep.tolist() == [[True, False, False, False, False, True, False, True]]


def test_non_finite(device):
    weight = torch.tensor([[float("nan"), float("inf"), -float("inf"), 1.0, -5.0, 0.5]]).to(device)
    keep = ops.magnitude_prune_mask(weight, 0.5)
    assert torch.equal(keep, ops.reference_magnitude_prune_mask(weight, 0.5))
    assert keep.tolist() == [[True, True, True, False, False, False]]


def test_nan_payloads(device):
    """NaNs of any payload or sign rank as one value above +inf, ties by index, as the reference's sort
    has it (arithmetic gives 0x7fffffff-style NaNs, ``float("nan")`` is 0x7fc00000)."""
    for dtype, int_dtype, nans in (
        (torch.float32, torch.int32, [0x7FFFFFFF, 0x7FC00000, -0x00400000, 0x7F800001]),  # -0x00400000: 0xffc00000
        (torch.float64, torch.int64, [0x7FFFFFFFFFFFFFFF, 0x7FF8000000000000, -0x0008000000000000, 0x7FF0000000000001]),
    ):
        nan = torch.tensor(nans, dtype=int_dtype).view(dtype)
        weight = torch.cat([nan, torch.tensor([float("inf"), 1.0, -2.0], dtype=dtype), nan.flip(0)])[None].to(device)
        for n_prune in range(weight.shape[1] + 1):
            p = n_prune / weight.shape[1]
            assert torch.equal(ops.magnitude_prune_mask(weight, p), ops.reference_magnitude_prune_mask(weight, p)), (dtype, n_prune)


def test_non_contiguous_weight():
    weight = torch.randn(40, 3)
    assert torch.equal(ops.magnitude_prune_mask(weight.t(), 0.4), ops.reference_magnitude_prune_mask(weight.t(), 0.4))


def test_opcheck():
    weight = torch.randn(3, 50)
    n_prune = torch.tensor([0, 20, 50])
    torch.library.opcheck(torch.ops.hapruned.magnitude_prune_mask.default, (weight, n_prune))


@pytest.mark.parametrize(
    "weight, sparsity, error, message",
    [
        (torch.randn(10), 0.5, ValueError, "weight must be a 2-D tensor"),
        (torch.randn(2, 3, 4), 0.5, ValueError, "weight must be a 2-D tensor"),
        (torch.ones(2, 5, dtype=torch.int64), 0.5, TypeError, "weight must be float32 or float64"),
        (torch.randn(2, 5), 1.5, ValueError, r"sparsity must lie in \[0, 1\]"),
        (torch.randn(2, 5), -0.1, ValueError, r"sparsity must lie in \[0, 1\]"),
        (torch.randn(2, 5), torch.tensor([0.5, 2.0]), ValueError, r"sparsity must lie in \[0, 1\]"),
        (torch.randn(2, 5), torch.tensor([0.5, 0.5, 0.5]), ValueError, "sparsity must be a float or a tensor of shape"),
    ],
)
def test_bad_input_names_the_argument(weight, sparsity, error, message):
    with pytest.raises(error, match=message):
        ops.magnitude_prune_mask(weight, sparsity)
