"""Loads the compiled extension once; without it hapruned runs on the pure-PyTorch reference ops."""

import warnings

import torch  # noqa: F401  (the extension links against libtorch, which must be loaded first)

try:
    from hapruned import _C  # noqa: F401  (registers torch.ops.hapruned.* kernels)

    HAS_EXTENSION = True
except ImportError as error:  # not built, or built against another torch
    HAS_EXTENSION = False
    warnings.warn(
        f"hapruned: the compiled extension hapruned._C is not available ({error}); using the "
        "pure-PyTorch reference ops, which are slower. Build it with "
        "`pip install --no-build-isolation -e .` from the source tree.",
        RuntimeWarning,
        stacklevel=2,
    )
