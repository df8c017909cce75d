"""The emulated CUDA device: the CUDA backend of the ops (host code and kernels, from the source the
CUDA build compiles) run on the CPU, with CPU tensors (docs/cuda.md). It is a test device: the tests'
``device`` fixture runs every CUDA test on it, so the kernels' device code runs without a GPU.

``hapruned._C_emu`` registers those kernels for CPU tensors under ``torch.ops.hapruned_emu``;
``cuda_kernels_on_cpu()`` puts them in place of the CPU kernels of ``torch.ops.hapruned`` while it is
active, so the wrappers, autograd, ``opcheck`` and ``torch.compile`` run them as they would run the
CUDA kernels on a GPU.
"""

import contextlib
import warnings

import torch

from hapruned.ops.library import SCHEMAS

# The ops with a CUDA kernel.
OPS = ("magnitude_prune_mask", "masked_lstm_cell", "masked_lstm_cell_backward", "masked_lstm_seq",
       "masked_lstm_seq_backward")

try:
    from hapruned import _C_emu  # noqa: F401  (registers the torch.ops.hapruned_emu kernels)

    AVAILABLE, MISSING_REASON = True, ""
except ImportError as error:  # not built: not x86-64 Linux, HAPRUNED_EMULATED_CUDA=0, or another torch
    AVAILABLE = False
    MISSING_REASON = (
        f"the emulated CUDA device hapruned._C_emu is not built ({error}); build it on x86-64 Linux with "
        "`python setup.py build_ext --inplace` (or `pip install --no-build-isolation -e .`), see docs/cuda.md"
    )

_definitions = torch.library.Library("hapruned_emu", "DEF")
for _name in OPS:
    _definitions.define(_name + SCHEMAS[_name])


@contextlib.contextmanager
def cuda_kernels_on_cpu():
    """While active, the ops in OPS run the emulated CUDA kernels on CPU tensors instead of the CPU
    kernels. Not thread-safe: it changes the kernels of the whole process."""
    if not AVAILABLE:
        raise RuntimeError(MISSING_REASON)
    kernels = torch.library.Library("hapruned", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
            for name in OPS:
                kernels.impl(name, getattr(torch.ops.hapruned_emu, name).default, "CPU")
        yield
    finally:
        kernels._destroy()  # the CPU kernels are back
