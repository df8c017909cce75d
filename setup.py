"""Builds the compiled extensions ``hapruned._C`` and ``hapruned._C_emu``.

The CPU kernels (csrc/*.cpp, csrc/cpu/*.cpp) are always built. The CUDA kernels (csrc/cuda/*.cu)
are built when a CUDA toolkit and a CUDA-enabled torch are both present; ``HAPRUNED_CUDA=1``
forces them (and fails loudly if they cannot be built), ``HAPRUNED_CUDA=0`` skips them.

``hapruned._C_emu`` is the emulated CUDA device, a test device that runs the CUDA kernels on the CPU
(csrc/emu, docs/cuda.md). It is built on x86-64 Linux; ``HAPRUNED_EMULATED_CUDA=1`` forces it (and
fails loudly elsewhere), ``HAPRUNED_EMULATED_CUDA=0`` skips it.
"""

import glob
import os
import platform
import sys

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def build_cuda() -> bool:
    flag = os.environ.get("HAPRUNED_CUDA")
    if flag not in (None, "", "0", "1"):
        raise SystemExit(f"HAPRUNED_CUDA must be 0 or 1, got {flag!r}")
    if flag == "0":
        return False
    available = CUDA_HOME is not None and torch.version.cuda is not None
    if flag == "1" and not available:
        raise SystemExit(
            "HAPRUNED_CUDA=1 but the CUDA build is impossible: "
            f"CUDA_HOME={CUDA_HOME!r}, torch.version.cuda={torch.version.cuda!r}"
        )
    return available


def build_emulated_cuda() -> bool:
    flag = os.environ.get("HAPRUNED_EMULATED_CUDA")
    if flag not in (None, "", "0", "1"):
        raise SystemExit(f"HAPRUNED_EMULATED_CUDA must be 0 or 1, got {flag!r}")
    supported = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
    if flag == "1" and not supported:
        raise SystemExit(f"HAPRUNED_EMULATED_CUDA=1 but the emulated CUDA device needs x86-64 Linux, "
                         f"not {sys.platform} {platform.machine()}")
    return flag != "0" and supported


cuda = build_cuda()
sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
# -fno-trapping-math -fno-math-errno (as torch itself builds) let the gate loops vectorise;
# -ffp-contract=fast lets the register-blocked products use FMA (off by default under -std=c++17).
# torch's build adds -DPy_LIMITED_API for its oldest supported Python (3.10): the wheel tag says the same.
# -Wno-psabi: the SIMD helpers pass AVX vectors by value between always-inline functions, where the
# ABI GCC warns about never applies.
cxx_flags = ["-std=c++20", "-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=fast", "-Wno-psabi"]
if cuda:
    # No --use_fast_math: the gate kernels are bound by memory and launches, and fast maths' approximate
    # expf and division cost float32 accuracy against the reference.
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    extension = CUDAExtension(
        "hapruned._C",
        sources,
        extra_compile_args={"cxx": cxx_flags + ["-DHAPRUNED_WITH_CUDA"], "nvcc": ["-std=c++20", "-O3"]},
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )
else:
    extension = CppExtension(
        "hapruned._C", sources, extra_compile_args=cxx_flags, extra_link_args=["-fopenmp"], py_limited_api=True
    )

extensions = [extension]
if build_emulated_cuda():
    # -Wno-unknown-pragmas: the kernels' `#pragma unroll` is CUDA's.
    extensions.append(CppExtension(
        "hapruned._C_emu", sorted(glob.glob("csrc/emu/*.cpp")),
        extra_compile_args=["-std=c++20", "-O2", "-Wno-unknown-pragmas"], py_limited_api=True,
    ))

setup(
    ext_modules=extensions,
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
