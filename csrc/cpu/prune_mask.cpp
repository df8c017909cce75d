// CPU magnitude-prune mask: per group, a selection (std::nth_element) on the weights' keys
// (csrc/prune_key.h, as the CUDA kernel), groups in parallel.
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../checks.h"
#include "../prune_key.h"
#include "parallel.h"

namespace hapruned {
namespace {

template <typename scalar_t>
void prune_group(const scalar_t* w, int64_t size, int64_t n_prune, bool* keep) {
  using bits_t = PruneKey<scalar_t>;
  if (n_prune == 0 || n_prune == size) {
    std::fill(keep, keep + size, n_prune == 0);
    return;
  }
  auto magnitude = [&](int64_t j) {
    bits_t bits;
    std::memcpy(&bits, w + j, sizeof(bits));
    return prune_key(bits);
  };
  std::vector<bits_t> keys(size);
  for (int64_t j = 0; j < size; ++j) keys[j] = magnitude(j);
  // keys[n_prune - 1] becomes the largest pruned magnitude; the ones before it are <= it.
  std::nth_element(keys.begin(), keys.begin() + (n_prune - 1), keys.end());
  const bits_t threshold = keys[n_prune - 1];
  // Weights equal to the threshold that are pruned: the lowest-index ones, this many.
  int64_t ties_pruned = std::count(keys.begin(), keys.begin() + n_prune, threshold);
  for (int64_t j = 0; j < size; ++j) {
    const bits_t key = magnitude(j);
    bool kept = key > threshold;
    if (key == threshold) kept = ties_pruned-- <= 0;
    keep[j] = kept;
  }
}

at::Tensor magnitude_prune_mask_cpu(const at::Tensor& weight, const at::Tensor& n_prune) {
  check_prune_inputs(weight, n_prune);
  const int64_t groups = weight.size(0), size = weight.size(1);
  const at::Tensor n_prune_dense = n_prune.contiguous();  // a view (expanded, strided) is read as its values
  const int64_t* counts = n_prune_dense.data_ptr<int64_t>();
  for (int64_t g = 0; g < groups; ++g) {
    TORCH_CHECK(counts[g] >= 0 && counts[g] <= size, "n_prune[", g, "] must lie in [0, ", size, "], got ",
                counts[g]);
  }
  at::Tensor keep = at::empty({groups, size}, weight.options().dtype(at::kBool));
  bool* out = keep.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "magnitude_prune_mask_cpu", [&] {
    const scalar_t* w = weight.data_ptr<scalar_t>();
    parallel_for(0, groups, grain_for(size), [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) prune_group(w + g * size, size, counts[g], out + g * size);
    });
  });
  return keep;
}

}  // namespace

TORCH_LIBRARY_IMPL(hapruned, CPU, m) { m.impl("magnitude_prune_mask", &magnitude_prune_mask_cpu); }

}  // namespace hapruned
