// The small matrix products of the CPU LSTM steps, on raw arrays.
//
// Register-blocked products for the per-step recurrent GEMMs, whose batch per group is small
// (a few episodes per PPO minibatch), where a BLAS call per step spends most of its time packing
// the weights. The weights are packed once per call into panels of kPanel columns ([K][kPanel]
// each, zero-padded), then every step multiplies up to kMaxRows rows by each panel in registers.
//
// A single step at a small batch (inference: one step per call, so packing the weights would not
// pay) uses the dot-product form instead: W [rows][K] is read in place, a few rows at a time,
// vectorised along k, with its mask applied on load.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "parallel.h"
#include "simd.h"

namespace hapruned {

template <typename T>
constexpr int64_t kPanel = 2 * kLanes<T>;
constexpr int64_t kMaxRows = 6;  // 6 rows x 2 vectors = 12 accumulators, out of 16 AVX registers

// A mask as the kernels read it: bool as bytes, else in the weights' dtype T; nullptr when absent.
inline const uint8_t* bool_mask_data(const c10::optional<at::Tensor>& mask) {
  return mask ? reinterpret_cast<const uint8_t*>(mask->data_ptr<bool>()) : nullptr;
}
template <typename T>
const T* typed_mask_data(const c10::optional<at::Tensor>& mask) {
  return mask ? mask->data_ptr<T>() : nullptr;
}

// The right operand of the per-step products is packed into panels out[g][p][k][j] = B(k, p * kPanel + j),
// zero past N: B = (W * mask)^T for the forward (W_hh [4H][H]), B = W * mask for the backward.

// The backward's packing, B(k, n) = (W * mask)[k][n] of each group's W [K][N], row by row.
template <typename T, typename M>
void pack_rows(const T* w, const M* mask, int64_t G, int64_t K, int64_t N, T* out) {
  const int64_t group_stride = (N + kPanel<T> - 1) / kPanel<T> * K * kPanel<T>;
  parallel_for(0, G * K, grain_for(N), [&](int64_t begin, int64_t end) {
    for (int64_t gk = begin; gk < end; ++gk) {
      T* dst = out + (gk / K) * group_stride + gk % K * kPanel<T>;
      for (int64_t n = 0; n < N; ++n)
        dst[n / kPanel<T> * K * kPanel<T> + n % kPanel<T>] = masked_value(w, mask, gk * N + n);
    }
  });
}

// The forward's packing, B(k, n) = (W * mask)[n][k], of the panels [begin, end) (counted over all
// groups) of w [G][N][K]. For float, 8 x 8 blocks are loaded as vectors, masked and transposed in
// registers; a partial panel, the K % 8 tail and double go element by element.
template <typename T, typename M>
HAPRUNED_SIMD_CLONES void pack_transposed_panels(int64_t begin, int64_t end, const T* w, const M* mask, int64_t N,
                                                 int64_t K, T* out) {
  constexpr int64_t P = kPanel<T>;
  const int64_t panels = (N + P - 1) / P;
  for (int64_t gp = begin; gp < end; ++gp) {
    const int64_t g = gp / panels, n0 = (gp % panels) * P;
    const T* wg = w + g * N * K;
    const M* mg = mask ? mask + g * N * K : mask;
    T* dst = out + gp * K * P;
    int64_t k0 = 0;
    if constexpr (std::is_same_v<T, float>)
      if (n0 + P <= N)
        for (; k0 + 8 <= K; k0 += 8)
          for (int64_t half = 0; half < P; half += 8) {
            Vec<float> r[8];
            for (int64_t j = 0; j < 8; ++j) {
              const int64_t at = (n0 + half + j) * K + k0;
              r[j] = load_masked(wg + at, mg ? mg + at : mg);
            }
            transpose8(r);
            for (int64_t i = 0; i < 8; ++i) std::memcpy(dst + (k0 + i) * P + half, &r[i], sizeof(r[i]));
          }
    for (int64_t k = k0; k < K; ++k)
      for (int64_t j = 0; j < std::min(P, N - n0); ++j) {
        dst[k * P + j] = masked_value(wg, mg, (n0 + j) * K + k);
      }
  }
}

// Packs w [G, rows, cols] times its mask (read as M) into out [G, panels, K, kPanel].
template <typename T, typename M>
void pack_masked_panels(const at::Tensor& w, const M* mask, bool transpose, at::Tensor& out) {
  const int64_t G = out.size(0), panels = out.size(1), K = out.size(2), N = w.size(transpose ? 1 : 2);
  if (transpose)
    parallel_for(0, G * panels, grain_for(K * kPanel<T>), [&](int64_t begin, int64_t end) {
      pack_transposed_panels(begin, end, w.data_ptr<T>(), mask, N, K, out.data_ptr<T>());
    });
  else
    pack_rows(w.data_ptr<T>(), mask, G, K, N, out.data_ptr<T>());
}

// The packed panels [G, panels, K, kPanel] (zero past N) of w [G, rows, cols] times its optional mask
// (the weights' dtype or bool): B = (W * mask)^T with transpose, else W * mask.
template <typename T>
at::Tensor pack_panels(const at::Tensor& w, const c10::optional<at::Tensor>& mask, bool transpose) {
  const int64_t G = w.size(0), K = transpose ? w.size(2) : w.size(1), N = transpose ? w.size(1) : w.size(2);
  const int64_t panels = (N + kPanel<T> - 1) / kPanel<T>;
  at::Tensor out = N % kPanel<T> ? at::zeros({G, panels, K, kPanel<T>}, w.options())
                                 : at::empty({G, panels, K, kPanel<T>}, w.options());
  if (mask && mask->scalar_type() == at::kBool)
    pack_masked_panels<T>(w, bool_mask_data(mask), transpose, out);
  else
    pack_masked_panels<T>(w, typed_mask_data<T>(mask), transpose, out);
  return out;
}

// C[r, 0:N] (+)= A[r, 0:K] @ B for rows r < R (R <= kMaxRows), B packed by pack_panels.
template <typename T, int64_t R, bool Accumulate>
HAPRUNED_INLINE void rows_times_panels(const T* A, int64_t lda, const T* packed, int64_t K, int64_t N, T* C,
                                       int64_t ldc) {
  using V = Vec<T>;
  constexpr int64_t L = kLanes<T>;
  for (int64_t n0 = 0; n0 < N; n0 += kPanel<T>, packed += K * kPanel<T>) {
    V acc0[R] = {}, acc1[R] = {};
    for (int64_t k = 0; k < K; ++k) {
      const V b0 = *reinterpret_cast<const V*>(packed + k * kPanel<T>);
      const V b1 = *reinterpret_cast<const V*>(packed + k * kPanel<T> + L);
#pragma GCC unroll 6
      for (int64_t r = 0; r < R; ++r) {
        const T a = A[r * lda + k];
        acc0[r] += a * b0;
        acc1[r] += a * b1;
      }
    }
#pragma GCC unroll 6
    for (int64_t r = 0; r < R; ++r) {
      T* c = C + r * ldc + n0;
      if (n0 + kPanel<T> <= N) {
        V* c0 = reinterpret_cast<V*>(c);
        V* c1 = reinterpret_cast<V*>(c + L);
        *c0 = Accumulate ? *c0 + acc0[r] : acc0[r];
        *c1 = Accumulate ? *c1 + acc1[r] : acc1[r];
      } else {
        // Vector stores: taking the accumulators' addresses would keep them in memory (zeroed with
        // rep stos for every panel).
        alignas(32) T tail[kPanel<T>];
        reinterpret_cast<V*>(tail)[0] = acc0[r];
        reinterpret_cast<V*>(tail)[1] = acc1[r];
        for (int64_t j = 0; j < N - n0; ++j) c[j] = Accumulate ? c[j] + tail[j] : tail[j];
      }
    }
  }
}

template <typename T, bool Accumulate>
HAPRUNED_INLINE void block_times_panels(int64_t rows, const T* A, int64_t lda, const T* packed, int64_t K, int64_t N,
                                        T* C, int64_t ldc) {
  switch (rows) {
    case 1: return rows_times_panels<T, 1, Accumulate>(A, lda, packed, K, N, C, ldc);
    case 2: return rows_times_panels<T, 2, Accumulate>(A, lda, packed, K, N, C, ldc);
    case 3: return rows_times_panels<T, 3, Accumulate>(A, lda, packed, K, N, C, ldc);
    case 4: return rows_times_panels<T, 4, Accumulate>(A, lda, packed, K, N, C, ldc);
    case 5: return rows_times_panels<T, 5, Accumulate>(A, lda, packed, K, N, C, ldc);
    default: return rows_times_panels<T, 6, Accumulate>(A, lda, packed, K, N, C, ldc);
  }
}


// One operand pair of a dot tile: rows of A (stride lda) against rows of W and its mask (stride K).
template <typename T, typename M>
struct DotOperand {
  const T* a;
  int64_t lda;
  const T* w;
  const M* mask;  // nullptr: no mask
  int64_t K;
};

// out[b * ldo + n] = sum over both operands of A[b] . (W * mask)[n], for RB rows of A and RN rows
// of W: RB x RN vector accumulators, each reduced once at the end (the K % kLanes tail by element).
template <typename T, typename M, int64_t RB, int64_t RN>
HAPRUNED_INLINE void dot_tile(const DotOperand<T, M>& first, const DotOperand<T, M>& second, T* out, int64_t ldo) {
  using V = Vec<T>;
  constexpr int64_t L = kLanes<T>;
  V acc[RB][RN] = {};
  T tail[RB][RN] = {};
  for (const DotOperand<T, M>* op : {&first, &second}) {
    int64_t k = 0;
    for (; k + L <= op->K; k += L) {
      V w[RN];
#pragma GCC unroll 8
      for (int64_t n = 0; n < RN; ++n) w[n] = load_masked(op->w + n * op->K + k, op->mask ? op->mask + n * op->K + k : op->mask);
#pragma GCC unroll 4
      for (int64_t b = 0; b < RB; ++b) {
        V a;
        std::memcpy(&a, op->a + b * op->lda + k, sizeof(a));
#pragma GCC unroll 8
        for (int64_t n = 0; n < RN; ++n) acc[b][n] += a * w[n];
      }
    }
    for (; k < op->K; ++k)
      for (int64_t n = 0; n < RN; ++n) {
        const T w = masked_value(op->w, op->mask, n * op->K + k);
        for (int64_t b = 0; b < RB; ++b) tail[b][n] += op->a[b * op->lda + k] * w;
      }
  }
  if constexpr (std::is_same_v<T, float>) {
    static_assert(RB * RN <= 8, "one lane_sums8 per tile");
    V all[8] = {};
    for (int64_t b = 0; b < RB; ++b)
      for (int64_t n = 0; n < RN; ++n) all[b * RN + n] = acc[b][n];
    const V sums = lane_sums8(all);
    for (int64_t b = 0; b < RB; ++b)
      for (int64_t n = 0; n < RN; ++n) out[b * ldo + n] = sums[b * RN + n] + tail[b][n];
  } else {
    for (int64_t b = 0; b < RB; ++b)
      for (int64_t n = 0; n < RN; ++n) {
        T sum = tail[b][n];
        for (int64_t lane = 0; lane < L; ++lane) sum += acc[b][n][lane];
        out[b * ldo + n] = sum;
      }
  }
}

// pre[b][n] = x[b] . w_ih[n] + h[b] . w_hh[n] for RB batch rows and every n < 4H; up to eight
// accumulators, so the weights are read once per RB rows.
template <typename T, typename M, int64_t RB>
HAPRUNED_INLINE void dot_rows(DotOperand<T, M> ih, DotOperand<T, M> hh, int64_t rows, T* pre, int64_t ldo) {
  constexpr int64_t RN = RB == 1 ? 8 : RB == 2 ? 4 : 2;
  int64_t n = 0;
  auto advance = [](DotOperand<T, M>& op, int64_t by) {
    op.w += by * op.K;
    if (op.mask) op.mask += by * op.K;
  };
  for (; n + RN <= rows; n += RN, advance(ih, RN), advance(hh, RN)) dot_tile<T, M, RB, RN>(ih, hh, pre + n, ldo);
  for (; n < rows; ++n, advance(ih, 1), advance(hh, 1)) dot_tile<T, M, RB, 1>(ih, hh, pre + n, ldo);
}

}  // namespace hapruned
