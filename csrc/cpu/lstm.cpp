// CPU masked LSTM: the cell (one step) and the sequence (T steps of one layer), forward and backward.
//
// The input projection of all T steps is one ATen batched GEMM over all groups, and so are the
// weight and input gradients of the backward. The recurrent product of each step runs in a
// register-blocked kernel on weights packed once per call, fused with the gate non-linearities
// (forward) or their derivatives (backward) of the same rows. A single step with a small batch
// (inference, rollouts) reads the weights and masks in place instead (dot-product form), then
// runs the gates, group by group.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "../checks.h"
#include "activations.h"
#include "parallel.h"

namespace hapruned {
namespace {

// One row of the backward gate loop: from the activated gates, the cell states and the incoming
// gradients (dh = grad_h + dh_carry, dc = grad_c + dc_carry), the pre-activation gradients d_pre [4H]
// and the gradient of the previous cell state, written over dc_carry.
template <typename T>
HAPRUNED_INLINE void gates_backward_row(const T* act, const T* c_prev, const T* c_new, const T* grad_h,
                                        const T* dh_carry, const T* grad_c, T* dc_carry, T* d_pre, int64_t H) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const T i = act[j], f = act[H + j], g = act[2 * H + j], o = act[3 * H + j];
    const T tc = tanh_(c_new[j]);
    const T dh = grad_h[j] + dh_carry[j];
    const T dc = grad_c[j] + dc_carry[j] + dh * o * (T(1) - tc * tc);
    d_pre[j] = dc * g * i * (T(1) - i);
    d_pre[H + j] = dc * c_prev[j] * f * (T(1) - f);
    d_pre[2 * H + j] = dc * i * (T(1) - g * g);
    d_pre[3 * H + j] = dh * tc * o * (T(1) - o);
    dc_carry[j] = dc * f;
  }
}

// Register-blocked products for the per-step recurrent GEMMs, whose batch per group is small
// (a few episodes per PPO minibatch), where a BLAS call per step spends most of its time packing
// the weights. The weights are packed once per call into panels of kPanel columns ([K][kPanel]
// each, zero-padded), then every step multiplies up to kMaxRows rows by each panel in registers.

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
template <typename T>
constexpr int64_t kPanel = 2 * kLanes<T>;
constexpr int64_t kMaxRows = 6;  // 6 rows x 2 vectors = 12 accumulators, out of 16 AVX registers

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

// The packed panels [G, panels, K, kPanel] (zero past N) of w [G, rows, cols] times its optional mask
// (the weights' dtype or bool).
template <typename T>
at::Tensor pack_panels(const at::Tensor& w, const c10::optional<at::Tensor>& mask, bool transpose) {
  const int64_t G = w.size(0), rows = w.size(1), cols = w.size(2);
  const int64_t K = transpose ? cols : rows, N = transpose ? rows : cols;
  const int64_t panels = (N + kPanel<T> - 1) / kPanel<T>;
  at::Tensor out = N % kPanel<T> ? at::zeros({G, panels, K, kPanel<T>}, w.options())
                                 : at::empty({G, panels, K, kPanel<T>}, w.options());
  auto pack = [&](const auto* m) {
    if (transpose)
      parallel_for(0, G * panels, grain_for(K * kPanel<T>), [&](int64_t begin, int64_t end) {
        pack_transposed_panels(begin, end, w.data_ptr<T>(), m, N, K, out.data_ptr<T>());
      });
    else
      pack_rows(w.data_ptr<T>(), m, G, K, N, out.data_ptr<T>());
  };
  if (!mask)
    pack(static_cast<const T*>(nullptr));
  else if (mask->scalar_type() == at::kBool)
    pack(reinterpret_cast<const uint8_t*>(mask->data_ptr<bool>()));
  else
    pack(mask->data_ptr<T>());
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

// One forward step for row blocks [begin, end) of block_rows rows of each group: pre += h_prev @ W_hh^T
// (w_hh_t packed [G][4H/kPanel][H][kPanel]), then the gates of those rows (bias [G][4H]).
template <typename T>
HAPRUNED_SIMD_CLONES void forward_step_blocks(int64_t begin, int64_t end, int64_t block_rows, int64_t blocks_per_group,
                                              T* pre, int64_t pre_group_stride, const T* h_prev, const T* w_hh_t,
                                              const T* bias, const T* c_prev, T* c_new, T* h_new, int64_t B,
                                              int64_t H) {
  const int64_t panel_group_stride = ((4 * H + kPanel<T> - 1) / kPanel<T>) * H * kPanel<T>;
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t g = blk / blocks_per_group, b0 = (blk % blocks_per_group) * block_rows;
    const int64_t rows = std::min(block_rows, B - b0), r0 = g * B + b0;
    T* pre_rows = pre + g * pre_group_stride + b0 * 4 * H;
    block_times_panels<T, true>(rows, h_prev + r0 * H, H, w_hh_t + g * panel_group_stride, H, 4 * H, pre_rows, 4 * H);
    for (int64_t r = 0; r < rows; ++r)
      gates_forward_row(pre_rows + r * 4 * H, bias + g * 4 * H, c_prev + (r0 + r) * H, c_new + (r0 + r) * H,
                        h_new + (r0 + r) * H, H);
  }
}

// One backward step for row blocks [begin, end): the gate gradients of those rows, then their
// recurrent gradient dh_out = d_pre @ W_hh (w_hh packed [G][H/kPanel][4H][kPanel]).
template <typename T>
HAPRUNED_SIMD_CLONES void backward_step_blocks(int64_t begin, int64_t end, int64_t block_rows, int64_t blocks_per_group,
                                               const T* act, T* d_pre, int64_t group_stride, const T* w_hh,
                                               const T* c_prev, const T* c_new, const T* grad_h, const T* dh_carry,
                                               const T* grad_c, T* dc_carry, T* dh_out, int64_t B, int64_t H) {
  const int64_t panel_group_stride = ((H + kPanel<T> - 1) / kPanel<T>) * 4 * H * kPanel<T>;
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t g = blk / blocks_per_group, b0 = (blk % blocks_per_group) * block_rows;
    const int64_t rows = std::min(block_rows, B - b0), r0 = g * B + b0;
    const int64_t off = g * group_stride + b0 * 4 * H;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = (r0 + r) * H;
      gates_backward_row(act + off + r * 4 * H, c_prev + row, c_new + row, grad_h + row, dh_carry + row,
                         grad_c + row, dc_carry + row, d_pre + off + r * 4 * H, H);
    }
    block_times_panels<T, false>(rows, d_pre + off, 4 * H, w_hh + g * panel_group_stride, 4 * H, H, dh_out + r0 * H, H);
  }
}

// Rows per block of the per-step kernels: at most kMaxRows. When each step is split over the threads
// (fewer groups than threads), the blocks are evened out so that every thread gets as many rows: at
// B = 40 on 2 threads, 8 blocks of 5 rather than 4 + 3 blocks of 6.
int64_t rows_per_block(int64_t G, int64_t B) {
  int64_t blocks = (B + kMaxRows - 1) / kMaxRows;
  const int64_t threads = at::get_num_threads();
  if (G < threads) {
    const int64_t even = (G * blocks + threads - 1) / threads * threads;
    blocks = std::min(B, (even + G - 1) / G);
  }
  return (B + blocks - 1) / blocks;
}

// Runs step(t, begin, end) on ranges of row blocks for every step t, in time order (reversed for
// the backward); block_work: the multiply-adds of one block in one step. Groups are independent: with
// a group per thread or more, each thread runs all steps of one group before the next, so that group's
// packed weights stay in its cache and nothing is shared between steps; with fewer groups, each step
// is split over the threads.
template <typename Step>
void for_each_step(int64_t T, bool reverse, int64_t G, int64_t blocks, int64_t block_work, const Step& step) {
  auto time = [&](int64_t i) { return reverse ? T - 1 - i : i; };
  if (G >= at::get_num_threads()) {
    parallel_for(0, G, grain_for(T * blocks * block_work), [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g)
        for (int64_t i = 0; i < T; ++i) step(time(i), g * blocks, (g + 1) * blocks);
    });
  } else {
    for (int64_t i = 0; i < T; ++i)
      parallel_for(0, G * blocks, grain_for(block_work), [&](int64_t begin, int64_t end) { step(time(i), begin, end); });
  }
}

// out = a @ b for batches of matrices. MKL is several times slower when b has few columns (a
// first layer's input size) than on the transposed product, which puts them on the rows.
void bmm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (b.size(2) < 32)
    out.copy_(at::bmm(b.transpose(1, 2), a.transpose(1, 2)).transpose(1, 2));
  else
    at::bmm_out(out, a, b);
}

// The single step at a small batch (inference: one step per call, so packing the weights would
// not pay) in the dot-product form: W [rows][K] is read in place, a few rows at a time, vectorised
// along k, with its mask applied on load.

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

// The small-batch single step for groups [begin, end): pre-activations in the dot-product form,
// then the gate loop. Every pointer is to a contiguous [G, ...] array.
template <typename T, typename M>
HAPRUNED_SIMD_CLONES void fused_small_batch_groups(int64_t begin, int64_t end, const T* x, const T* h, const T* c,
                                                   const T* w_ih, const T* w_hh, const T* bias, const M* mask_ih,
                                                   const M* mask_hh, T* gates, T* h_new, T* c_new, int64_t B,
                                                   int64_t I, int64_t H) {
  const int64_t rows = 4 * H;
  for (int64_t g = begin; g < end; ++g) {
    for (int64_t b0 = 0; b0 < B; b0 += 4) {
      const int64_t r = g * B + b0;
      const DotOperand<T, M> ih{x + r * I, I, w_ih + g * rows * I, mask_ih ? mask_ih + g * rows * I : mask_ih, I};
      const DotOperand<T, M> hh{h + r * H, H, w_hh + g * rows * H, mask_hh ? mask_hh + g * rows * H : mask_hh, H};
      T* pre = gates + r * rows;
      switch (std::min<int64_t>(4, B - b0)) {
        case 1: dot_rows<T, M, 1>(ih, hh, rows, pre, rows); break;
        case 2: dot_rows<T, M, 2>(ih, hh, rows, pre, rows); break;
        case 3: dot_rows<T, M, 3>(ih, hh, rows, pre, rows); break;
        default: dot_rows<T, M, 4>(ih, hh, rows, pre, rows); break;
      }
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r = g * B + b;
      gates_forward_row(gates + r * rows, bias + g * rows, c + r * H, c_new + r * H, h_new + r * H, H);
    }
  }
}

// Single steps with batches up to this size take the dot-product path (measured on AVX2, G = 10,
// H = 128: 1.7x faster than packing + GEMM at B = 16, level at B = 32).
constexpr int64_t kFusedMaxBatch = 16;

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

// out = weight * mask (out may be weight). ATen's multiply by a bool mask converts it element by
// element, about 5x slower than by a mask of the weight's dtype, so bool masks are applied here instead.
void mask_into(const at::Tensor& weight, const at::Tensor& mask, at::Tensor& out) {
  if (mask.scalar_type() != at::kBool) {
    at::mul_out(out, weight, mask);
    return;
  }
  const uint8_t* keep = reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "masked_weight_cpu", [&] {
    const scalar_t* w = weight.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_for(0, weight.numel(), grain_for(1), [&](int64_t begin, int64_t end) { multiply_by_bool(begin, end, w, keep, o); });
  });
}

at::Tensor masked_weight(const at::Tensor& weight, const c10::optional<at::Tensor>& mask) {
  if (!mask) return weight;
  at::Tensor out = at::empty_like(weight);
  mask_into(weight, *mask, out);
  return out;
}

// Forward of T steps into preallocated outputs: y, cs [T,G,B,H] and gates [G,T,B,4H]; x [T,G,B,I].
void lstm_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                  const at::Tensor& w_hh, const at::Tensor& bias, const c10::optional<at::Tensor>& mask_ih,
                  const c10::optional<at::Tensor>& mask_hh, const LstmShape& s, at::Tensor& y, at::Tensor& cs,
                  at::Tensor& gates) {
  const auto [T, G, B, I, H] = s;
  if (B == 0 || H == 0) return;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "masked_lstm_forward_cpu", [&] {
    if (T == 1 && B <= kFusedMaxBatch) {
      auto run = [&](auto* m_ih, auto* m_hh) {
        using mask_t = std::remove_const_t<std::remove_pointer_t<decltype(m_ih)>>;
        parallel_for(0, G, grain_for(B * 4 * H * (I + H)), [&](int64_t begin, int64_t end) {
          fused_small_batch_groups<scalar_t, mask_t>(
              begin, end, x.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(), c0.data_ptr<scalar_t>(),
              w_ih.data_ptr<scalar_t>(), w_hh.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), m_ih, m_hh,
              gates.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), cs.data_ptr<scalar_t>(), B, I, H);
        });
      };
      // Both masks in one type: bool when both are bool (or absent), else the weights' dtype.
      const bool as_bool = (!mask_ih || mask_ih->scalar_type() == at::kBool) &&
                           (!mask_hh || mask_hh->scalar_type() == at::kBool);
      auto typed = [&](const c10::optional<at::Tensor>& mask) {
        return mask ? c10::optional<at::Tensor>(as_bool ? *mask : mask->to(x.scalar_type())) : mask;
      };
      const c10::optional<at::Tensor> m_ih = typed(mask_ih), m_hh = typed(mask_hh);
      if (as_bool) {
        // Read as bytes, which load_masked turns into lanes of 0 and 1.
        auto bytes = [](const c10::optional<at::Tensor>& m) {
          return m ? reinterpret_cast<const uint8_t*>(m->data_ptr<bool>()) : static_cast<const uint8_t*>(nullptr);
        };
        run(bytes(m_ih), bytes(m_hh));
      } else {
        run(m_ih ? m_ih->data_ptr<scalar_t>() : static_cast<scalar_t*>(nullptr),
            m_hh ? m_hh->data_ptr<scalar_t>() : static_cast<scalar_t*>(nullptr));
      }
      return;
    }
    const at::Tensor w_ih_t = masked_weight(w_ih, mask_ih).transpose(1, 2);
    // Input projection of every step at once, straight into gates ([G, T*B, 4H]); the gate loop adds the bias.
    const at::Tensor x_by_group = T == 1 ? x.view({G, B, I}) : x.permute({1, 0, 2, 3}).reshape({G, T * B, I});
    at::Tensor gates_flat = gates.view({G, T * B, 4 * H});
    at::bmm_out(gates_flat, x_by_group, w_ih_t);
    const at::Tensor w_hh_t = pack_panels<scalar_t>(w_hh, mask_hh, /*transpose=*/true);
    const int64_t rows = rows_per_block(G, B), blocks = (B + rows - 1) / rows, state = G * B * H;
    scalar_t *pre = gates.data_ptr<scalar_t>(), *ys = y.data_ptr<scalar_t>(), *c_all = cs.data_ptr<scalar_t>();
    const scalar_t *h_first = h0.data_ptr<scalar_t>(), *c_first = c0.data_ptr<scalar_t>();
    for_each_step(T, /*reverse=*/false, G, blocks, rows * 4 * H * H, [&](int64_t t, int64_t begin, int64_t end) {
      forward_step_blocks<scalar_t>(begin, end, rows, blocks, pre + t * B * 4 * H, T * B * 4 * H,
                                    t == 0 ? h_first : ys + (t - 1) * state, w_hh_t.data_ptr<scalar_t>(),
                                    bias.data_ptr<scalar_t>(), t == 0 ? c_first : c_all + (t - 1) * state,
                                    c_all + t * state, ys + t * state, B, H);
    });
  });
}

// Backward of T steps into preallocated gradients (shapes of their inputs; grad_x [T,G,B,I]).
void lstm_backward(const at::Tensor& grad_y, const at::Tensor& grad_cs, const at::Tensor& x, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const c10::optional<at::Tensor>& mask_ih, const c10::optional<at::Tensor>& mask_hh,
                   const at::Tensor& y, const at::Tensor& cs, const at::Tensor& gates, const LstmShape& s,
                   at::Tensor& grad_x, at::Tensor& grad_h0, at::Tensor& grad_c0, at::Tensor& grad_w_ih,
                   at::Tensor& grad_w_hh, at::Tensor& grad_bias) {
  const auto [T, G, B, I, H] = s;
  if (B == 0 || H == 0) {
    for (at::Tensor* grad : {&grad_x, &grad_h0, &grad_c0, &grad_w_ih, &grad_w_hh, &grad_bias}) grad->zero_();
    return;
  }
  const at::Tensor w_ih_eff = masked_weight(w_ih, mask_ih);
  at::Tensor d_pre = at::empty({G, T, B, 4 * H}, x.options());  // gradients of the pre-activations
  at::Tensor dh_carry = at::zeros({G, B, H}, x.options());
  grad_c0.zero_();  // carries dc from step to step, ends as the gradient of c0
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "masked_lstm_backward_cpu", [&] {
    const at::Tensor w_hh_packed = pack_panels<scalar_t>(w_hh, mask_hh, /*transpose=*/false);
    const int64_t rows = rows_per_block(G, B), blocks = (B + rows - 1) / rows, state = G * B * H;
    const scalar_t *act = gates.data_ptr<scalar_t>(), *c_first = c0.data_ptr<scalar_t>(), *c_all = cs.data_ptr<scalar_t>();
    const scalar_t *grad_h = grad_y.data_ptr<scalar_t>(), *grad_c = grad_cs.data_ptr<scalar_t>();
    scalar_t *d_pre_ptr = d_pre.data_ptr<scalar_t>(), *dh = dh_carry.data_ptr<scalar_t>(), *dc = grad_c0.data_ptr<scalar_t>();
    for_each_step(T, /*reverse=*/true, G, blocks, rows * 4 * H * H, [&](int64_t t, int64_t begin, int64_t end) {
      backward_step_blocks<scalar_t>(begin, end, rows, blocks, act + t * B * 4 * H, d_pre_ptr + t * B * 4 * H,
                                     T * B * 4 * H, w_hh_packed.data_ptr<scalar_t>(),
                                     t == 0 ? c_first : c_all + (t - 1) * state, c_all + t * state,
                                     grad_h + t * state, dh, grad_c + t * state, dc,
                                     t == 0 ? grad_h0.data_ptr<scalar_t>() : dh, B, H);
    });
  });
  const at::Tensor d_pre_flat = d_pre.view({G, T * B, 4 * H});
  // Inputs of every step, grouped: x and the previous hidden state ([h0, y[0..T-2]]).
  const at::Tensor x_by_group = T == 1 ? x.view({G, B, I}) : x.permute({1, 0, 2, 3}).reshape({G, T * B, I});
  const at::Tensor h_by_group =
      T == 1 ? h0 : at::cat({h0.unsqueeze(1), y.slice(0, 0, T - 1).permute({1, 0, 2, 3})}, 1).view({G, T * B, H});
  bmm_into(grad_w_ih, d_pre_flat.transpose(1, 2), x_by_group);
  bmm_into(grad_w_hh, d_pre_flat.transpose(1, 2), h_by_group);
  if (mask_ih) mask_into(grad_w_ih, *mask_ih, grad_w_ih);
  if (mask_hh) mask_into(grad_w_hh, *mask_hh, grad_w_hh);
  at::sum_out(grad_bias, d_pre_flat, {1});
  at::Tensor grad_x_by_group = T == 1 ? grad_x.view({G, B, I}) : at::empty({G, T * B, I}, x.options());
  bmm_into(grad_x_by_group, d_pre_flat, w_ih_eff);
  if (T > 1) grad_x.copy_(grad_x_by_group.view({G, T, B, I}).permute({1, 0, 2, 3}));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_lstm_cell_cpu(
    const at::Tensor& x, const at::Tensor& h, const at::Tensor& c, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& bias, const c10::optional<at::Tensor>& mask_ih, const c10::optional<at::Tensor>& mask_hh) {
  const LstmShape s = check_lstm_inputs(x, h, c, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/false);
  check_bias(bias, x, s);
  at::Tensor h_new = at::empty_like(h), c_new = at::empty_like(c);
  at::Tensor gates = at::empty({s.G, s.B, 4 * s.H}, x.options());
  at::Tensor y = h_new.unsqueeze(0), cs = c_new.unsqueeze(0);
  lstm_forward(x.unsqueeze(0), h, c, w_ih, w_hh, bias, mask_ih, mask_hh, s, y, cs, gates);
  return {h_new, c_new, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> masked_lstm_cell_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const c10::optional<at::Tensor>& mask_ih,
    const c10::optional<at::Tensor>& mask_hh, const at::Tensor& gates, const at::Tensor& c_new) {
  const LstmShape s = check_lstm_inputs(x, h, c, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/false);
  check_tensor(grad_h, "grad_h", 3, x);
  check_shape(grad_h, "grad_h", h.sizes());
  check_tensor(grad_c, "grad_c", 3, x);
  check_shape(grad_c, "grad_c", h.sizes());
  check_tensor(gates, "gates", 3, x);
  check_shape(gates, "gates", {s.G, s.B, 4 * s.H});
  check_tensor(c_new, "c_new", 3, x);
  check_shape(c_new, "c_new", h.sizes());
  at::Tensor grad_x = at::empty_like(x), grad_h0 = at::empty_like(h), grad_c0 = at::empty_like(c);
  at::Tensor grad_w_ih = at::empty_like(w_ih), grad_w_hh = at::empty_like(w_hh);
  at::Tensor grad_bias = at::empty({s.G, 4 * s.H}, x.options());
  at::Tensor grad_x_seq = grad_x.unsqueeze(0);
  lstm_backward(grad_h.unsqueeze(0), grad_c.unsqueeze(0), x.unsqueeze(0), h, c, w_ih, w_hh, mask_ih, mask_hh,
                at::Tensor() /* y is only read for T > 1 */, c_new.unsqueeze(0), gates, s, grad_x_seq, grad_h0,
                grad_c0, grad_w_ih, grad_w_hh, grad_bias);
  return {grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_lstm_seq_cpu(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& bias, const c10::optional<at::Tensor>& mask_ih, const c10::optional<at::Tensor>& mask_hh) {
  const LstmShape s = check_lstm_inputs(x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/true);
  check_bias(bias, x, s);
  at::Tensor y = at::empty({s.T, s.G, s.B, s.H}, x.options()), cs = at::empty_like(y);
  at::Tensor gates = at::empty({s.G, s.T, s.B, 4 * s.H}, x.options());
  lstm_forward(x, h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh, s, y, cs, gates);
  return {y, cs, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> masked_lstm_seq_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& grad_cs, const at::Tensor& x, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh, const c10::optional<at::Tensor>& mask_ih,
    const c10::optional<at::Tensor>& mask_hh, const at::Tensor& y, const at::Tensor& cs, const at::Tensor& gates) {
  const LstmShape s = check_lstm_inputs(x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/true);
  for (auto [tensor, name] : {std::pair{&grad_y, "grad_y"}, {&grad_cs, "grad_cs"}, {&y, "y"}, {&cs, "cs"}}) {
    check_tensor(*tensor, name, 4, x);
    check_shape(*tensor, name, {s.T, s.G, s.B, s.H});
  }
  check_tensor(gates, "gates", 4, x);
  check_shape(gates, "gates", {s.G, s.T, s.B, 4 * s.H});
  at::Tensor grad_x = at::empty_like(x), grad_h0 = at::empty_like(h0), grad_c0 = at::empty_like(c0);
  at::Tensor grad_w_ih = at::empty_like(w_ih), grad_w_hh = at::empty_like(w_hh);
  at::Tensor grad_bias = at::empty({s.G, 4 * s.H}, x.options());
  lstm_backward(grad_y, grad_cs, x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates, s, grad_x, grad_h0,
                grad_c0, grad_w_ih, grad_w_hh, grad_bias);
  return {grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(hapruned, CPU, m) {
  m.impl("masked_lstm_cell", &masked_lstm_cell_cpu);
  m.impl("masked_lstm_cell_backward", &masked_lstm_cell_backward_cpu);
  m.impl("masked_lstm_seq", &masked_lstm_seq_cpu);
  m.impl("masked_lstm_seq_backward", &masked_lstm_seq_backward_cpu);
}

}  // namespace hapruned
