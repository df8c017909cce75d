#!/usr/bin/env bash
# Compile-checks the CUDA kernels (csrc/cuda/*.cu) on a machine without a GPU.
#
#   tools/check_cuda_build.sh          nvcc -c each .cu for sm_90 with the flags of setup.py, warnings as errors
#   tools/check_cuda_build.sh --full   also builds the whole extension with HAPRUNED_CUDA=1 in a temporary
#                                      copy of the repository, loads it and checks that every op has a
#                                      CUDA kernel registered (no GPU needed to load)
#
# Needs nvcc (CUDA_HOME, default /usr/local/cuda) and torch's headers. The compile check takes them
# from TORCH_PYTHON's torch (default: .venv-cuda/bin/python in the repository if it exists, else
# python3); a CPU build of torch ships the CUDA headers too, all but one header its build generates,
# which is written into a temporary include directory. --full needs a CUDA build of torch; create
# one once with
#   python -m venv .venv-cuda && .venv-cuda/bin/pip install torch numpy setuptools
# The kernels are only compiled here: they have not run unless a GPU test run says so.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
default_python="$repo/.venv-cuda/bin/python"
[[ -x "$default_python" ]] || default_python="$(command -v python3)"
torch_python="${TORCH_PYTHON:-$default_python}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
arch="${CUDA_ARCH:-90}"
nvcc="$CUDA_HOME/bin/nvcc"

[[ -x "$torch_python" ]] || { echo "no python at $torch_python (set TORCH_PYTHON)" >&2; exit 2; }
[[ -x "$nvcc" ]] || { echo "no nvcc at $nvcc (set CUDA_HOME)" >&2; exit 2; }
read -r torch_version torch_cuda torch_dir < <("$torch_python" -c \
  "import os, torch; print(torch.__version__, torch.version.cuda, os.path.dirname(torch.__file__))" 2>/dev/null)
[[ -n "$torch_dir" ]] || { echo "$torch_python cannot import torch" >&2; exit 2; }
if [[ "${1:-}" == "--full" && "$torch_cuda" == "None" ]]; then
  echo "--full needs a CUDA build of torch; $torch_python has a CPU-only one ($torch_version)" >&2
  exit 2
fi
echo "torch $torch_version (CUDA $torch_cuda), $("$nvcc" --version | tail -1), sm_$arch"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# A CPU build of torch lacks the one header its CUDA build generates; it only marks a shared build.
generated="c10/cuda/impl/cuda_cmake_macros.h"
if [[ ! -f "$torch_dir/include/$generated" ]]; then
  mkdir -p "$out/include/$(dirname "$generated")"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$out/include/$generated"
fi

# The flags torch.utils.cpp_extension passes for a CUDAExtension, plus setup.py's nvcc flags.
flags=(
  -std=c++20 -O3 --expt-relaxed-constexpr
  -gencode "arch=compute_$arch,code=sm_$arch"
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
  -D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C
  -D_GLIBCXX_USE_CXX11_ABI=1
  -isystem "$out/include" -isystem "$torch_dir/include" -isystem "$torch_dir/include/torch/csrc/api/include"
  -Xcompiler -fPIC -Xcompiler -Wall -Werror all-warnings
  -Xptxas -warn-spills -Xptxas -warn-lmem-usage
)
for source in "$repo"/csrc/cuda/*.cu; do
  echo "nvcc -c ${source#"$repo"/}"
  "$nvcc" "${flags[@]}" -c "$source" -o "$out/$(basename "$source").o"
done
echo "compiled: $(ls "$out"/*.o | wc -l) object(s), no errors, no warnings"

if [[ "${1:-}" == "--full" ]]; then
  # Only the files a build reads, so the copy is small and the checkout stays untouched.
  mkdir -p "$out/repo"
  (cd "$repo" && cp -r setup.py pyproject.toml csrc hapruned "$out/repo/")
  [[ -f "$repo/README.md" ]] && cp "$repo/README.md" "$out/repo/"
  echo "building the extension with HAPRUNED_CUDA=1 in $out/repo"
  (cd "$out/repo" && HAPRUNED_CUDA=1 HAPRUNED_EMULATED_CUDA=0 TORCH_CUDA_ARCH_LIST="${arch:0:1}.${arch:1}" MAX_JOBS="${MAX_JOBS:-2}" \
    "$torch_python" setup.py -q build_ext --inplace > "$out/build.log" 2>&1) || { cat "$out/build.log"; exit 1; }
  (cd "$out/repo" && "$torch_python" - <<'EOF'
import glob, torch
library = glob.glob("hapruned/_C.*so")[0]  # not _C_emu
torch.ops.load_library(library)
ops = ["magnitude_prune_mask", "masked_lstm_cell", "masked_lstm_cell_backward", "masked_lstm_seq",
       "masked_lstm_seq_backward"]
missing = [(op, key) for op in ops for key in ("CUDA", "CPU")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"hapruned::{op}", key)]
assert not missing, f"kernels not registered: {missing}"
print(f"loaded {library}: CUDA and CPU kernels registered for", ", ".join(ops))
EOF
  )
fi
