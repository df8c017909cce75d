// Launch helpers shared by the CUDA kernels.
#pragma once
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace hapruned {
namespace cuda {

constexpr int kThreads = 256;  // threads per block of every kernel here

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for an elementwise kernel over n items with a grid-stride loop (the cap keeps the grid
// legal for any n; the loop covers the rest).
inline unsigned elementwise_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(n, kThreads), int64_t(1) << 20));
}

}  // namespace cuda
}  // namespace hapruned
