// CUDA's names for the emulated CUDA device (runtime.h): what the kernels in csrc/cuda use, with
// CUDA's semantics (32-lane warps, 32-bit masks and ballots), and nothing more. Included through
// csrc/cuda/launch.cuh in the emulated build only, after the torch headers.
#pragma once
#include <c10/macros/Macros.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)

#define threadIdx (::hapruned::emu::running->thread_idx)
#define blockIdx (::hapruned::emu::running->block_idx)
#define blockDim (::hapruned::emu::running->block_dim)
#define gridDim (::hapruned::emu::running->grid_dim)

// A failed device-side assert ends the launch with an error (on a GPU: "device-side assert triggered").
#undef CUDA_KERNEL_ASSERT
#undef CUDA_KERNEL_ASSERT_MSG
#define CUDA_KERNEL_ASSERT(cond) \
  if (!(cond)) ::hapruned::emu::fail("device-side assert triggered: " #cond, __FILE__, __LINE__)
#define CUDA_KERNEL_ASSERT_MSG(cond, msg) \
  if (!(cond)) ::hapruned::emu::fail("device-side assert triggered: " msg, __FILE__, __LINE__)

// `HAPRUNED_EMU_SHARED(type, name);` declares the block's shared variable `name` (see launch.cuh).
#define HAPRUNED_EMU_SHARED(type, name)     \
  static constexpr char name##_site = 0;    \
  std::type_identity_t<type>& name =        \
      *static_cast<std::type_identity_t<type>*>(::hapruned::emu::shared(&name##_site, sizeof(type), alignof(type)))

constexpr int warpSize = ::hapruned::emu::kWarpSize;

namespace hapruned::emu {

template <typename T>
uint64_t to_bits(T value) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t), "a lane's value is 1 to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(uint64_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

}  // namespace hapruned::emu

inline void __syncthreads() { ::hapruned::emu::sync_threads(); }
inline void __threadfence() { ::hapruned::emu::thread_fence(); }

template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace ::hapruned::emu;
  return from_bits<T>(warp_op(WarpOp::kShuffleUp, mask, to_bits(var), delta, width));
}

template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace ::hapruned::emu;
  return from_bits<T>(warp_op(WarpOp::kShuffleDown, mask, to_bits(var), delta, width));
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  using namespace ::hapruned::emu;
  return static_cast<unsigned>(warp_op(WarpOp::kBallot, mask, predicate != 0, 0, warpSize));
}

template <typename T>
unsigned __match_any_sync(unsigned mask, T value) {
  static_assert(std::is_integral_v<T> && (sizeof(T) == 4 || sizeof(T) == 8),
                "__match_any_sync takes 32- or 64-bit integers");
  using namespace ::hapruned::emu;
  return static_cast<unsigned>(warp_op(WarpOp::kMatchAny, mask, to_bits(value), 0, warpSize));
}

inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }

// Atomics and L2 loads are relaxed and device-wide, as CUDA's; an atomic also lets other threads run.
inline unsigned atomicAdd(unsigned* address, unsigned value) {
  ::hapruned::emu::yield();
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

template <typename T>
T __ldcg(const T* address) {
  return __atomic_load_n(address, __ATOMIC_RELAXED);
}

inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
