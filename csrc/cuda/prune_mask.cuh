// CUDA magnitude-prune mask: a radix select per group on the weights' keys (csrc/prune_key.h, as the CPU
// kernel), every group in the same launches. Included by prune_mask.cu (the CUDA build) and
// csrc/emu/kernels.cpp (the emulated device).
//
// The threshold is the key of rank n_prune - 1 (0-based, ascending). Each group is cut into slices,
// one block per (group, slice). Pass p histograms 11 bits of the keys whose higher bits match the
// threshold bits found so far; the last block of a group to finish a pass picks the bin holding the
// threshold (3 passes for float32, 6 for float64; a pass returns at once when an earlier one already
// isolated the threshold). Then one kernel writes the mask: below the threshold pruned, above kept,
// and of the keys equal to it the first (rank + 1) in index order pruned. Only when some but not all
// of those ties are pruned does a counting kernel first find how many ties each slice holds.
//
// Launches: 1 memset + passes + 2, whatever the number of groups. Weight reads: one per pass that
// still has a threshold to find, one for the mask, one more only when ties are split.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/core/DeviceGuard.h>

#include <limits>

#include "../checks.h"
#include "../prune_key.h"
#include "launch.cuh"

namespace hapruned {
namespace cuda {
namespace {

constexpr int kRadixBits = 11;
constexpr int kBins = 1 << kRadixBits;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullWarp = 0xffffffffu;
constexpr unsigned kNoDigit = 0xffffffffu;
constexpr int kItems = 4;                        // keys per thread per load round
constexpr int64_t kSliceTarget = 16 * kThreads;  // elements per block
constexpr int64_t kMaxSlices = 1024;             // bounds the tie-offset sums of the mask kernel

template <typename key_t>
struct Radix {
  static constexpr int kKeyBits = PruneKeyBits<key_t>::kBits;
  static constexpr int kPasses = (kKeyBits + kRadixBits - 1) / kRadixBits;
  // Pass p reads bits [shift(p), shift(p) + width(p)), from the top.
  __host__ __device__ static constexpr int shift(int pass) {
    return kKeyBits - kRadixBits * (pass + 1) > 0 ? kKeyBits - kRadixBits * (pass + 1) : 0;
  }
  __host__ __device__ static constexpr int width(int pass) { return kKeyBits - kRadixBits * pass - shift(pass); }
};

enum Mode : int64_t { kKeepAll = 0, kPruneAll = 1, kSelecting = 2, kDone = 3 };

// Where the threshold search of one group stands. The "class" is the set of weights whose resolved
// key bits equal those of the threshold; the threshold has rank `rank` within it.
struct Selection {
  uint64_t prefix;    // the threshold's resolved key bits
  uint64_t resolved;  // which key bits are resolved
  int64_t rank;       // 0-based rank of the threshold within the class
  int64_t count;      // size of the class
  int64_t mode;       // Mode; kDone once the class is one key or is pruned whole
};

__device__ Selection initial_selection(int64_t n_prune, int64_t size) {
  CUDA_KERNEL_ASSERT_MSG(n_prune >= 0 && n_prune <= size, "n_prune must lie in [0, size]");
  Selection sel{0, 0, n_prune - 1, size, kSelecting};
  if (n_prune <= 0) sel.mode = kKeepAll;
  if (n_prune >= size) sel.mode = kPruneAll;
  return sel;
}

// Some of the threshold's ties are pruned and some kept: the mask needs each tie's rank in index order.
__device__ bool splits_ties(const Selection& sel) { return sel.mode == kDone && sel.rank + 1 < sel.count; }

// Sum over the block; every thread gets the result. scratch: kWarps entries of shared memory.
__device__ int64_t block_sum(int64_t value, int64_t* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(kFullWarp, value, offset);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = value;
  __syncthreads();
  int64_t total = 0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  __syncthreads();  // scratch may be reused right after
  return total;
}

// Run by one warp of the last block of a group to finish pass `pass`: finds the bin of the complete
// histogram that holds the threshold's rank and writes the refined selection.
template <typename key_t>
__device__ void resolve_digit(const unsigned* group_hist, int pass, Selection sel, Selection* out) {
  using R = Radix<key_t>;
  const int lane = threadIdx.x % 32;
  const int per_lane = (1 << R::width(pass)) / 32;
  const unsigned* bins = group_hist + lane * per_lane;
  int64_t sum = 0;
  for (int i = 0; i < per_lane; ++i) sum += __ldcg(bins + i);  // L2: the other blocks' atomics live there
  int64_t inclusive = sum;
  for (int offset = 1; offset < 32; offset *= 2) {
    const int64_t up = __shfl_up_sync(kFullWarp, inclusive, offset);
    if (lane >= offset) inclusive += up;
  }
  const int64_t before = inclusive - sum;
  const unsigned owners = __ballot_sync(kFullWarp, before <= sel.rank && sel.rank < inclusive);
  CUDA_KERNEL_ASSERT(owners != 0);  // the histogram holds the whole class, so some lane holds the rank
  if (lane != __ffs(owners) - 1) return;
  int64_t below = before;
  int i = 0;
  unsigned in_bin = __ldcg(bins);
  while (sel.rank >= below + in_bin) {
    below += in_bin;
    in_bin = __ldcg(bins + ++i);
  }
  sel.prefix |= uint64_t(lane * per_lane + i) << R::shift(pass);
  sel.resolved |= uint64_t((1 << R::width(pass)) - 1) << R::shift(pass);
  sel.rank -= below;
  sel.count = in_bin;
  if (R::shift(pass) == 0 || sel.rank + 1 == sel.count) sel.mode = kDone;
  *out = sel;
}

// Pass `pass` of the select for block (group g, slice s). states: [passes, G]; pass p reads row p - 1
// (or starts from n_prune) and writes row p. hist: [passes, G, kBins]; arrivals: [passes, G].
template <typename key_t>
__global__ void __launch_bounds__(kThreads)
    radix_pass_kernel(const key_t* __restrict__ keys, const int64_t* __restrict__ n_prune, int64_t groups,
                      int64_t size, int64_t slices, int64_t slice_len, int pass, Selection* states,
                      unsigned* hist, unsigned* arrivals) {
  using R = Radix<key_t>;
  HAPRUNED_SHARED(unsigned[kBins], local);
  HAPRUNED_SHARED(bool, is_last);
  const int64_t g = blockIdx.x / slices, s = blockIdx.x % slices;
  const Selection sel = pass == 0 ? initial_selection(n_prune[g], size) : states[(pass - 1) * groups + g];
  Selection* out = states + pass * groups + g;
  if (sel.mode != kSelecting) {  // nothing left to find: carry the selection forward
    if (s == 0 && threadIdx.x == 0) *out = sel;
    return;
  }
  for (int i = threadIdx.x; i < kBins; i += kThreads) local[i] = 0;
  if (!HAPRUNED_FAULT(1)) __syncthreads();

  const key_t* row = keys + g * size;
  const int64_t begin = s * slice_len, end = min(size, begin + slice_len);
  const key_t prefix = static_cast<key_t>(sel.prefix), resolved = static_cast<key_t>(sel.resolved);
  const int shift = R::shift(pass);
  const unsigned digit_mask = (1u << R::width(pass)) - 1;
  const int lane = threadIdx.x % 32;
  // The trip count is the same for the whole block, so full warps reach __match_any_sync. Each
  // thread loads kItems keys before counting them, to keep more loads in flight.
  for (int64_t base = begin; base < end; base += kItems * kThreads) {
    key_t loaded[kItems];
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t j = base + k * kThreads + threadIdx.x;
      loaded[k] = j < end ? row[j] : key_t(0);
    }
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const key_t key = prune_key(loaded[k]);
      const bool counted = base + k * kThreads + threadIdx.x < end && (key & resolved) == prefix;
      const unsigned digit = counted ? static_cast<unsigned>(key >> shift) & digit_mask : kNoDigit;
      // One shared atomic per distinct digit in the warp: many equal magnitudes (exact zeros, say)
      // would otherwise serialise on one bin.
      const unsigned peers = __match_any_sync(kFullWarp, digit);
      if (counted && lane == __ffs(peers) - 1) atomicAdd(&local[digit], __popc(peers));
    }
  }
  __syncthreads();

  unsigned* group_hist = hist + (pass * groups + g) * kBins;
  for (int i = threadIdx.x; i < kBins; i += kThreads) {
    if (local[i] != 0) atomicAdd(&group_hist[i], local[i]);
  }
  if (!HAPRUNED_FAULT(7)) __threadfence();  // this block's counts are visible before it is counted as arrived
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(&arrivals[pass * groups + g], 1u) == static_cast<unsigned>(slices - 1);
  if (HAPRUNED_FAULT(2) && threadIdx.x == 0) is_last = s == slices - 1;  // the last slice, not the last to arrive
  __syncthreads();
  if (is_last && threadIdx.x < 32) {
    __threadfence();
    resolve_digit<key_t>(group_hist, pass, sel, out);
  }
}

// Ties (keys equal to the threshold) per slice, for the groups whose ties are split. slice_ties: [G, slices].
template <typename key_t>
__global__ void __launch_bounds__(kThreads)
    tie_count_kernel(const key_t* __restrict__ keys, const Selection* __restrict__ selections, int64_t size,
                     int64_t slices, int64_t slice_len, unsigned* __restrict__ slice_ties) {
  HAPRUNED_SHARED(int64_t[kWarps], scratch);
  const int64_t g = blockIdx.x / slices, s = blockIdx.x % slices;
  const Selection sel = selections[g];
  if (!splits_ties(sel)) return;
  const key_t* row = keys + g * size;
  const key_t threshold = static_cast<key_t>(sel.prefix);
  const int64_t begin = s * slice_len, end = min(size, begin + slice_len);
  int64_t ties = 0;
#pragma unroll 4
  for (int64_t j = begin + threadIdx.x; j < end - HAPRUNED_FAULT(3); j += kThreads) {
    ties += prune_key(row[j]) == threshold;
  }
  ties = block_sum(ties, scratch);
  if (threadIdx.x == 0) slice_ties[g * slices + s] = static_cast<unsigned>(ties);
}

// The keep-mask of block (group g, slice s). keep: [G, size].
template <typename key_t>
__global__ void __launch_bounds__(kThreads)
    prune_mask_kernel(const key_t* __restrict__ keys, const Selection* __restrict__ selections, int64_t size,
                      int64_t slices, int64_t slice_len, const unsigned* __restrict__ slice_ties,
                      bool* __restrict__ keep) {
  HAPRUNED_SHARED(int64_t[kWarps], scratch);
  HAPRUNED_SHARED(unsigned[kWarps], warp_ties);
  const int64_t g = blockIdx.x / slices, s = blockIdx.x % slices;
  const Selection sel = selections[g];
  CUDA_KERNEL_ASSERT(sel.mode != kSelecting);  // the last pass always resolves the threshold
  const key_t* row = keys + g * size;
  bool* out = keep + g * size;
  const int64_t begin = s * slice_len, end = min(size, begin + slice_len);
  if (sel.mode == kKeepAll || sel.mode == kPruneAll) {
    for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) out[j] = sel.mode == kKeepAll;
    return;
  }
  const key_t prefix = static_cast<key_t>(sel.prefix), resolved = static_cast<key_t>(sel.resolved);
  const int64_t ties_pruned = sel.rank + 1;  // of the class, the first this many in index order
  int64_t ties_before = 0;                   // ties in the slices before this one
  if (splits_ties(sel)) {
    int64_t partial = 0;
    for (int64_t i = threadIdx.x; i < s; i += kThreads) partial += slice_ties[g * slices + i];
    ties_before = block_sum(partial, scratch);
  }
  if (!splits_ties(sel) || ties_before >= ties_pruned) {
    // The class is pruned whole, or (ties split) none of this slice's ties is pruned.
    const bool class_kept = splits_ties(sel);
#pragma unroll 4
    for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
      const key_t bits = prune_key(row[j]) & resolved;
      out[j] = bits > prefix || (class_kept && bits == prefix);
    }
    return;
  }
  // Ties split inside this slice: rank them in index order with a block-wide count per stride.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t base = begin; base < end; base += kThreads) {
    const int64_t j = base + threadIdx.x;
    const key_t key = j < end ? prune_key(row[j]) : key_t(0);
    const bool tie = j < end && key == prefix;
    const unsigned ballot = __ballot_sync(kFullWarp, tie);
    if (lane == 0) warp_ties[warp] = __popc(ballot);
    if (!HAPRUNED_FAULT(4)) __syncthreads();
    int64_t rank = ties_before + __popc(ballot & ((1u << lane) - 1));
    int64_t stride_ties = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) rank += warp_ties[w];
      stride_ties += warp_ties[w];
    }
    if (j < end) out[j] = key > prefix || (tie && rank >= ties_pruned);
    ties_before += stride_ties;
    __syncthreads();  // warp_ties is rewritten in the next stride
  }
}

template <typename key_t>
void launch_prune_mask(const key_t* keys, const int64_t* n_prune, int64_t groups, int64_t size, bool* keep,
                       const at::Tensor& weight) {
  using R = Radix<key_t>;
  const int64_t slices = std::min(ceil_div(size, kSliceTarget), kMaxSlices);
  const int64_t slice_len = ceil_div(size, slices);
  const int64_t blocks = groups * slices;
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), "weight has too many groups for one launch: ", groups);

  // Workspace, zeroed in one memset: selections [passes, G], histograms [passes, G, kBins],
  // arrival counters [passes, G], ties per slice [G, slices].
  const int64_t state_bytes = R::kPasses * groups * int64_t(sizeof(Selection));
  const int64_t hist_count = R::kPasses * groups * kBins, arrival_count = R::kPasses * groups;
  const int64_t bytes = state_bytes + int64_t(sizeof(unsigned)) * (hist_count + arrival_count + groups * slices);
  at::Tensor work = at::zeros({bytes}, weight.options().dtype(at::kByte));
  auto* states = reinterpret_cast<Selection*>(work.data_ptr<uint8_t>());
  auto* hist = reinterpret_cast<unsigned*>(work.data_ptr<uint8_t>() + state_bytes);
  unsigned* arrivals = hist + hist_count;
  unsigned* slice_ties = arrivals + arrival_count;

  for (int pass = 0; pass < R::kPasses; ++pass) {
    launch(radix_pass_kernel<key_t>, blocks, keys, n_prune, groups, size, slices, slice_len, pass, states, hist,
           arrivals);
  }
  const Selection* selections = states + (R::kPasses - 1) * groups;
  launch(tie_count_kernel<key_t>, blocks, keys, selections, size, slices, slice_len, slice_ties);
  launch(prune_mask_kernel<key_t>, blocks, keys, selections, size, slices, slice_len, slice_ties, keep);
}

at::Tensor magnitude_prune_mask_cuda(const at::Tensor& weight, const at::Tensor& n_prune) {
  check_prune_inputs(weight, n_prune);
  TORCH_CHECK(weight.device().type() == kDeviceType, "weight must be a ", c10::DeviceTypeName(kDeviceType),
              " tensor, got ", weight.device());
  const int64_t groups = weight.size(0), size = weight.size(1);
  TORCH_CHECK(size <= std::numeric_limits<int32_t>::max(), "weight must have at most 2^31 - 1 columns, got ", size);
  const c10::DeviceGuard guard(weight.device());
  at::Tensor keep = at::empty({groups, size}, weight.options().dtype(at::kBool));
  if (keep.numel() == 0) return keep;
  // Counts are checked in the kernel (a device assert), not here: reading them would synchronise.
  const at::Tensor counts = n_prune.contiguous();
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "magnitude_prune_mask_cuda", [&] {
    using key_t = PruneKey<scalar_t>;
    launch_prune_mask<key_t>(reinterpret_cast<const key_t*>(weight.const_data_ptr<scalar_t>()),
                             counts.const_data_ptr<int64_t>(), groups, size, keep.data_ptr<bool>(), weight);
  });
  return keep;
}

}  // namespace
}  // namespace cuda
}  // namespace hapruned
