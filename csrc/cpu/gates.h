// The gate loops of the CPU LSTM kernels: vectorisable activations and the loops over one gate row
// (the gate maths of one unit are csrc/lstm.h's), so every kernel computes the same gates to the last bit.
#pragma once
#include <cmath>
#include <cstdint>

#include "../lstm.h"
#include "simd.h"

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

// The activations of the CPU gate maths.
struct CpuMath {
  template <typename T>
  static HAPRUNED_INLINE T sigmoid(T x) {
    return T(1) / (T(1) + fast_exp(-x));
  }
  template <typename T>
  static HAPRUNED_INLINE T tanh(T x) {
    return T(1) - T(2) / (fast_exp(T(2) * x) + T(1));
  }
};

// The gate loops assert independent iterations with `GCC ivdep`, not `omp simd`: OpenMP lowering runs
// before inlining and would keep the structs the gate maths return in per-lane arrays, which GCC does
// not vectorise.

// One row (one group, one batch element) of the forward gate loop. pre: [4H] pre-activations
// without the bias, overwritten with the activated gates.
template <typename T>
HAPRUNED_INLINE void gates_forward_row(T* pre, const T* bias, const T* c_prev, T* c_new, T* h_new, int64_t H) {
#pragma GCC ivdep
  for (int64_t j = 0; j < H; ++j) {
    const Gates<T> act = activate<CpuMath>(load_gates(pre, H, j) + load_gates(bias, H, j));
    const T c = cell_update(act, c_prev[j]);  // c_prev read after the activations, which decides the FMA of c
    store_gates(pre, H, j, act);
    c_new[j] = c;
    h_new[j] = hidden_state<CpuMath>(act, c);
  }
}

// The forward gate loop over n units in feature-major order (the sparse kernels' layout): pre holds
// four blocks of n pre-activations (i, f, g, o) with the bias already added, overwritten with the
// activated gates; c_prev, c_new and h_new hold n units each.
template <typename T>
HAPRUNED_INLINE void gates_forward_units(T* pre, const T* c_prev, T* c_new, T* h_new, int64_t n) {
#pragma GCC ivdep
  for (int64_t j = 0; j < n; ++j) {
    const Gates<T> act = activate<CpuMath>(load_gates(pre, n, j));
    const T c = cell_update(act, c_prev[j]);
    store_gates(pre, n, j, act);
    c_new[j] = c;
    h_new[j] = hidden_state<CpuMath>(act, c);
  }
}

// The backward gate loop over n units in feature-major order: act and d_pre hold four blocks of n;
// the gradient arriving at h is grad_h + dh_carry; dc_carry holds the gradient of c_new in and is
// overwritten with that of c_prev.
template <typename T>
HAPRUNED_INLINE void gates_backward_units(const T* act, T* d_pre, const T* c_prev, const T* c_new, const T* grad_h,
                                          const T* dh_carry, T* dc_carry, int64_t n) {
#pragma GCC ivdep
  for (int64_t j = 0; j < n; ++j) {
    const UnitBackward<T> unit =
        unit_backward<CpuMath>(load_gates(act, n, j), c_prev[j], c_new[j], grad_h[j] + dh_carry[j], dc_carry[j]);
    store_gates(d_pre, n, j, unit.d_pre);
    dc_carry[j] = unit.dc_prev;
  }
}

// One row of a backward step's gate loop: its gates at gate_row of step.act and step.d_pre, its
// states and their gradients at state_row.
template <typename T>
HAPRUNED_INLINE void gates_backward_row(const BackwardStep<T>& step, int64_t gate_row, int64_t state_row, int64_t H) {
  const T* act = step.act + gate_row;
  T* d_pre = step.d_pre + gate_row;
  const T *c_prev = step.c_prev + state_row, *c_new = step.c_new + state_row;
  const T *grad_h = step.grad_h + state_row, *grad_c = step.grad_c + state_row;
  const T* dh_carry = step.dh_carry + state_row;
  T* dc_carry = step.dc_carry + state_row;
#pragma GCC ivdep
  for (int64_t j = 0; j < H; ++j) {
    const UnitBackward<T> unit = unit_backward<CpuMath>(load_gates(act, H, j), c_prev[j], c_new[j],
                                                        grad_h[j] + dh_carry[j], grad_c[j] + dc_carry[j]);
    store_gates(d_pre, H, j, unit.d_pre);
    dc_carry[j] = unit.dc_prev;
  }
}

}  // namespace hapruned
