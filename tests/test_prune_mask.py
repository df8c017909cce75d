"""magnitude_prune_mask: exact counts, the tie rule, sparsity 0 and 1, per-group targets, and
bit-identical agreement with the reference twin."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hapruned
from hapruned import ops
from hapruned.ops import emulated


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


def _weights(kind, groups, size, dtype, gen):
    """Weights of a kind that steers the select: "randn"; "ties" (five values, so the threshold's ties
    span slices); "shared_bits" (one exponent, few low mantissa bits: every radix pass has work); and
    "non_finite" (randn with NaNs of several payloads and signs, and infinities)."""
    if kind == "ties":
        return torch.randint(-2, 3, (groups, size), generator=gen).to(dtype)
    if kind == "shared_bits":
        steps = torch.randint(0, 50, (groups, size), generator=gen).to(dtype)
        signs = torch.where(torch.rand(groups, size, generator=gen) < 0.5, -1.0, 1.0).to(dtype)
        return (1 + steps * torch.finfo(dtype).eps) * signs
    weight = torch.randn(groups, size, generator=gen, dtype=dtype)
    if kind == "non_finite":
        _, int_dtype, nans = next(entry for entry in NAN_PAYLOADS if entry[0] == dtype)
        infinities = torch.tensor([float("inf"), -float("inf")], dtype=dtype)
        specials = torch.cat([torch.tensor(nans, dtype=int_dtype).view(dtype), infinities])
        where = torch.rand(groups, size, generator=gen) < 0.05
        weight[where] = specials[torch.randint(0, len(specials), (int(where.sum()),), generator=gen)]
    return weight


# One slice of up to 4096 keys per group, several slices (the blocks of a group then meet in the
# last-block-done protocol), and more than 4096 * 1024 keys, where a group's 1024 slices grow longer.
SIZE_CLASSES = [1, 37, 4096, 4097, 3 * 4096 + 11, 4096 * 1024 + 4097]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZE_CLASSES[:-1])
def test_size_classes(device, dtype, size):
    gen = torch.Generator().manual_seed(size)
    for kind in ("randn", "ties", "shared_bits", "non_finite"):
        weight = _weights(kind, 2, size, dtype, gen).to(device)
        for sparsity in (torch.tensor([0.5, 0.95]), torch.rand(2, generator=gen), torch.tensor([1, size - 1]) / size):
            keep = ops.magnitude_prune_mask(weight, sparsity)
            assert torch.equal(keep, ops.reference_magnitude_prune_mask(weight, sparsity)), (kind, sparsity)


@pytest.mark.parametrize("dtype, kind", [(torch.float32, "ties"), (torch.float64, "non_finite")])
def test_longest_slices(device, dtype, kind):
    """A group of more than 4096 * 1024 keys: 1024 slices, each longer than 4096 (one call per case: slow)."""
    size = SIZE_CLASSES[-1]
    weight = _weights(kind, 1, size, dtype, torch.Generator().manual_seed(3)).to(device)
    keep = ops.magnitude_prune_mask(weight, 0.9)
    assert torch.equal(keep, ops.reference_magnitude_prune_mask(weight, 0.9))


def test_ties_split_across_slices(device):
    """Equal magnitudes everywhere (1 and -1; 0.0 and -0.0): the first n_prune indices are pruned,
    however the slices of 3414 keys cut them."""
    size = 5 * 4096 + 3
    gen = torch.Generator().manual_seed(0)
    signs = torch.where(torch.rand(2, size, generator=gen) < 0.5, -1.0, 1.0)
    weight = torch.stack([signs[0], signs[1] * 0.0]).to(device)
    for n_prune in (1, 3413, 3414, 3415, 10000, size - 1):
        keep = torch.ops.hapruned.magnitude_prune_mask(weight, torch.tensor([n_prune, size - n_prune], device=device))
        index = torch.arange(size, device=device)
        assert torch.equal(keep, torch.stack([index >= n_prune, index >= size - n_prune])), n_prune


def test_many_groups(device):
    """Thousands of one-block groups and some groups of two slices, each with its own sparsity (0 and 1 among them)."""
    gen = torch.Generator().manual_seed(2)
    for groups, size in ((3000, 40), (30, 5000)):
        weight = _weights("ties", groups, size, torch.float32, gen).to(device)
        sparsity = torch.rand(groups, generator=gen, dtype=torch.float64)
        sparsity[:2] = torch.tensor([0.0, 1.0])
        keep = ops.magnitude_prune_mask(weight, sparsity)
        assert torch.equal(keep, ops.reference_magnitude_prune_mask(weight, sparsity)), (groups, size)


# NaNs of several payloads, one with the sign bit set (-0x00400000 is 0xffc00000), as integers.
NAN_PAYLOADS = [
    (torch.float32, torch.int32, [0x7FFFFFFF, 0x7FC00000, -0x00400000, 0x7F800001]),
    (torch.float64, torch.int64, [0x7FFFFFFFFFFFFFFF, 0x7FF8000000000000, -0x0008000000000000, 0x7FF0000000000001]),
]


def test_nan_payloads(device):
    """NaNs of any payload or sign rank as one value above +inf, ties by index, as the reference's sort
    has it (arithmetic gives 0x7fffffff-style NaNs, ``float("nan")`` is 0x7fc00000)."""
    for dtype, int_dtype, nans in NAN_PAYLOADS:
        nan = torch.tensor(nans, dtype=int_dtype).view(dtype)
        weight = torch.cat([nan, torch.tensor([float("inf"), 1.0, -2.0], dtype=dtype), nan.flip(0)])[None].to(device)
        for n_prune in range(weight.shape[1] + 1):
            p = n_prune / weight.shape[1]
            assert torch.equal(ops.magnitude_prune_mask(weight, p), ops.reference_magnitude_prune_mask(weight, p)), (dtype, n_prune)


class CudaLikeNaNs(TorchDispatchMode):
    """NaNs as a GPU may treat them: ``abs`` keeps a NaN's sign bit and ``sort`` orders floats by their
    bits as a radix sort does, so a NaN with the sign bit set ranks below -inf and one without above +inf."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.abs.default:
            return torch.where(args[0].isnan(), args[0], func(*args, **kwargs))
        if func is torch.ops.aten.sort.stable and args[0].dtype.is_floating_point:
            x, dim = args[0], kwargs.get("dim", -1)
            bits = x.view(torch.int32 if x.dtype == torch.float32 else torch.int64)
            ordered = torch.where(bits < 0, bits ^ torch.iinfo(bits.dtype).max, bits)  # as two's complement
            indices = torch.sort(ordered, stable=True, dim=dim).indices
            return x.gather(dim, indices), indices
        return func(*args, **kwargs)


def test_reference_ranks_nans_alike_whatever_the_device_does_with_them():
    """The twin's NaN rule holds however the device's abs and sort treat NaNs (on an H200, a float64 NaN
    with the sign bit set was pruned before 1.0). The CPU kernel defines the expected mask."""
    for dtype, int_dtype, nans in NAN_PAYLOADS:
        numbers = torch.tensor([float("inf"), 1.0, -2.0], dtype=dtype)
        weight = torch.cat([torch.tensor(nans, dtype=int_dtype).view(dtype), numbers])
        weight = weight[torch.randperm(len(weight), generator=torch.Generator().manual_seed(0))][None]
        with CudaLikeNaNs():  # the mode does what it says: the sign-bit NaN sorts first
            assert torch.sort(weight.abs(), stable=True).values[0, 0].isnan()
        for n_prune in range(weight.shape[1] + 1):
            p = n_prune / weight.shape[1]
            with CudaLikeNaNs():
                keep = ops.reference_magnitude_prune_mask(weight, p)
            assert torch.equal(keep, ops.reference_magnitude_prune_mask(weight, p)), (dtype, n_prune)
            if hapruned.HAS_EXTENSION:
                assert torch.equal(keep, ops.magnitude_prune_mask(weight, p)), (dtype, n_prune)


@pytest.mark.emulated
def test_emulated_device_assert_is_an_error():
    """On the emulated CUDA device a failed device-side assert (a count outside [0, size], which only the
    kernel checks) ends the launch with an error naming it; then the CPU kernels are back."""
    weight, counts = torch.randn(2, 10), torch.tensor([3, 11])
    with emulated.cuda_kernels_on_cpu():
        with pytest.raises(RuntimeError, match=r"device-side assert triggered: n_prune must lie in \[0, size\] \(block 1"):
            torch.ops.hapruned.magnitude_prune_mask(weight, counts)
        assert (~torch.ops.hapruned.magnitude_prune_mask(weight, torch.tensor([3, 4]))).sum(1).tolist() == [3, 4]
    with pytest.raises(RuntimeError, match=r"n_prune\[1\] must lie in \[0, 10\], got 11"):
        torch.ops.hapruned.magnitude_prune_mask(weight, counts)


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
