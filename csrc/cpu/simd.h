// SIMD helpers of the CPU kernels: the clone attribute, 32-byte GCC vectors, masked loads (a weight
// times its bool or float mask) and in-register shuffles.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
// One AVX2+FMA clone and one baseline clone, picked at load time: the wheel stays portable.
#define HAPRUNED_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HAPRUNED_SIMD_CLONES
#endif
#define HAPRUNED_INLINE inline __attribute__((always_inline))

namespace hapruned {

// 32-byte GCC vectors (an AVX register) with the element's alignment, so loads and stores may be unaligned.
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32), aligned(4)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32), aligned(8)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int64_t kLanes = 32 / sizeof(T);

// GCC vectors of any width (Bytes a power of two, at least sizeof(T)), with T's alignment.
template <typename T, int64_t Bytes>
struct VecNOf {
  typedef T type __attribute__((vector_size(Bytes), aligned(sizeof(T))));
};
template <typename T, int64_t Bytes>
using VecN = typename VecNOf<T, Bytes>::type;

template <typename V>
HAPRUNED_INLINE V load_vec(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename V>
HAPRUNED_INLINE void store_vec(void* p, V v) {
  std::memcpy(p, &v, sizeof(v));
}

// Weight i times its mask (none: nullptr). Masks are read as stored: bool (as bytes, a quarter of a
// float mask's traffic) or the weights' dtype. Both multiply, as the reference does, so a NaN or an
// infinity in a pruned weight gives NaN whatever the mask's dtype.
template <typename T, typename M>
HAPRUNED_INLINE T masked_value(const T* w, const M* mask, int64_t i) {
  if (mask == nullptr) return w[i];
  if constexpr (std::is_same_v<M, uint8_t>)
    return w[i] * T(mask[i] != 0);
  else
    return w[i] * mask[i];
}

// masked_value for a vector of weights. GCC widens bytes to float lanes one by one, so for float
// the eight bytes are broadcast to every quarter of a vector and byte i is copied into the four
// bytes of lane i by one in-lane byte shuffle (vpbroadcastq + vpshufb); lanes that are not zero
// become 1.0f, the others 0.0f, and multiply the weights.
template <typename T, typename M>
HAPRUNED_INLINE Vec<T> load_masked(const T* w, const M* mask) {
  Vec<T> v;
  std::memcpy(&v, w, sizeof(v));
  if (mask == nullptr) return v;
  if constexpr (std::is_same_v<M, T>) {
    Vec<T> m;
    std::memcpy(&m, mask, sizeof(m));
    return v * m;
  } else if constexpr (std::is_same_v<T, float>) {
    typedef uint64_t Quads __attribute__((vector_size(32)));
    typedef uint8_t Bytes __attribute__((vector_size(32)));
    typedef int32_t Ints __attribute__((vector_size(32)));
    uint64_t eight;
    std::memcpy(&eight, mask, sizeof(eight));
    const Quads quads = {eight, eight, eight, eight};
    Bytes bytes;
    std::memcpy(&bytes, &quads, sizeof(bytes));
    // lanes 0-3 take bytes 0-3 from the low half, lanes 4-7 bytes 4-7 from the high half (20-23)
    bytes = __builtin_shufflevector(bytes, bytes, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 20, 20, 20, 20,
                                    21, 21, 21, 21, 22, 22, 22, 22, 23, 23, 23, 23);
    Ints lanes;
    std::memcpy(&lanes, &bytes, sizeof(lanes));
    const Ints one = (lanes != 0) & 0x3f800000;  // the bits of 1.0f where kept
    Vec<float> factor;
    std::memcpy(&factor, &one, sizeof(factor));
    return v * factor;
  } else {
    for (int64_t lane = 0; lane < kLanes<T>; ++lane) v[lane] = masked_value(w, mask, lane);
    return v;
  }
}

// In-register transpose of an 8 x 8 float block: r[i][k] -> r[k][i].
HAPRUNED_INLINE void transpose8(Vec<float> (&r)[8]) {
  using V = Vec<float>;
  V t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * j + 1] = __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int i = 0; i < 4; ++i) {
    r[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// The lane sums of eight float vectors as one vector, sums[m] = sum of v[m]'s lanes: halves, then
// quarters, then pairs of lanes are added across the vectors (21 instructions instead of 8 x 7 adds).
HAPRUNED_INLINE Vec<float> lane_sums8(const Vec<float> (&v)[8]) {
  using V = Vec<float>;
  V half[4], quarter[2];
  for (int i = 0; i < 4; ++i)  // lanes 0-3: partial sums of v[2i], lanes 4-7: of v[2i + 1]
    half[i] = __builtin_shufflevector(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
              __builtin_shufflevector(v[2 * i], v[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  for (int i = 0; i < 2; ++i)  // two lanes of partial sums for each of v[4i .. 4i + 3]
    quarter[i] = __builtin_shufflevector(half[2 * i], half[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13) +
                 __builtin_shufflevector(half[2 * i], half[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15);
  return __builtin_shufflevector(quarter[0], quarter[1], 0, 2, 4, 6, 8, 10, 12, 14) +
         __builtin_shufflevector(quarter[0], quarter[1], 1, 3, 5, 7, 9, 11, 13, 15);
}

// out[i] = w[i] * mask[i] for i in [begin, end), as the kernels apply a bool mask.
template <typename T>
HAPRUNED_SIMD_CLONES void multiply_by_bool(int64_t begin, int64_t end, const T* w, const uint8_t* mask, T* out) {
  int64_t i = begin;
  for (; i + kLanes<T> <= end; i += kLanes<T>) {
    const Vec<T> v = load_masked(w + i, mask + i);
    std::memcpy(out + i, &v, sizeof(v));
  }
  for (; i < end; ++i) out[i] = masked_value(w, mask, i);
}

}  // namespace hapruned
