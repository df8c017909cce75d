// The CUDA build of the magnitude prune mask (prune_mask.cuh).
#include <torch/library.h>

#include "prune_mask.cuh"

TORCH_LIBRARY_IMPL(hapruned, CUDA, m) { m.impl("magnitude_prune_mask", &hapruned::cuda::magnitude_prune_mask_cuda); }
