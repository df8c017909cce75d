// The magnitude prune mask's ranking key of a weight (docs/design.md §3), shared by the CPU and CUDA
// kernels: the bits of its magnitude (the sign bit cleared), so that unsigned integer order is magnitude
// order and equal magnitudes tie exactly; every NaN, of any payload or sign, one key above +inf (the
// reference twin ranks all NaNs as one value above +inf, ties by index).
#pragma once
#include <cstdint>
#include <type_traits>

#include "host_device.h"

namespace hapruned {

// The unsigned integer holding a float32's or float64's bits, and so its key.
template <typename scalar_t>
using PruneKey = std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>;

template <typename key_t>
struct PruneKeyBits {
  static constexpr int kBits = 8 * sizeof(key_t) - 1;  // the sign bit is cleared
  static constexpr key_t kMagnitude = ~(key_t(1) << kBits);
  static constexpr int kMantissaBits = sizeof(key_t) == 4 ? 23 : 52;
  static constexpr key_t kInf = kMagnitude & ~((key_t(1) << kMantissaBits) - 1);  // +inf's bits
  static constexpr key_t kNaN = kInf + 1;                                           // every NaN's key
};

// The key of a weight, from its bits.
template <typename key_t>
HAPRUNED_HOST_DEVICE key_t prune_key(key_t bits) {
  using K = PruneKeyBits<key_t>;
  bits &= K::kMagnitude;
  return bits > K::kInf ? K::kNaN : bits;
}

}  // namespace hapruned
