// Shared by the CPU LSTM kernels: the SIMD clone attribute, and the vectorisable activations and
// forward gate loop, so every kernel computes the same gates to the last bit.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
// One AVX2+FMA clone and one baseline clone, picked at load time: the wheel stays portable.
#define HAPRUNED_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HAPRUNED_SIMD_CLONES
#endif
#define HAPRUNED_INLINE inline __attribute__((always_inline))

namespace hapruned {

// exp for float without a libm call so the gate loops vectorise (Cephes polynomial, ~2 ulp;
// needs -fno-trapping-math to if-convert the clamp); double keeps std::exp.
HAPRUNED_INLINE float fast_exp(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  x = x - n * 0.693359375f + n * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * x * x + x + 1.0f;
  return y * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}
HAPRUNED_INLINE double fast_exp(double x) { return std::exp(x); }

template <typename T>
HAPRUNED_INLINE T sigmoid(T x) {
  return T(1) / (T(1) + fast_exp(-x));
}
template <typename T>
HAPRUNED_INLINE T tanh_(T x) {
  return T(1) - T(2) / (fast_exp(T(2) * x) + T(1));
}

// One row (one group, one batch element) of the forward gate loop. pre: [4H] pre-activations
// without the bias, overwritten with the activated gates.
template <typename T>
HAPRUNED_INLINE void gates_forward_row(T* pre, const T* bias, const T* c_prev, T* c_new, T* h_new, int64_t H) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T i = sigmoid(pre[j] + bias[j]), f = sigmoid(pre[H + j] + bias[H + j]);
    const T g = tanh_(pre[2 * H + j] + bias[2 * H + j]), o = sigmoid(pre[3 * H + j] + bias[3 * H + j]);
    const T c = f * c_prev[j] + i * g;
    pre[j] = i;
    pre[H + j] = f;
    pre[2 * H + j] = g;
    pre[3 * H + j] = o;
    c_new[j] = c;
    h_new[j] = o * tanh_(c);
  }
}

}  // namespace hapruned
