// CPU masked LSTM: the recurrent part of the cell (one step) and of the sequence (T steps of one
// layer), forward and backward. The entry points and the backward's weight, bias and input
// gradients are csrc/lstm.h's, shared with CUDA.
//
// The input projection of all T steps is one ATen batched GEMM over all groups, and so are the
// weight and input gradients of the backward. The recurrent product of each step runs in a
// register-blocked kernel on weights packed once per call (matmul.h), fused with the gate
// non-linearities (forward) or their derivatives (backward) of the same rows (gates.h). A single
// step with a small batch (inference, rollouts) reads the weights and masks in place instead
// (dot-product form), then runs the gates, group by group.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../lstm.h"
#include "gates.h"
#include "matmul.h"
#include "parallel.h"

namespace hapruned {
namespace {

struct CpuLstm {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;
  static void forward(const LstmShape& s, const LstmWeights& weights, const at::Tensor& bias, LstmSequence& seq);
  static void backward_steps(const LstmShape& s, const LstmWeights& weights, const LstmSequence& seq,
                             LstmGrads& grad, const LstmBackwardBuffers& buffers);
  static void bmm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b);
  static void mask_into(const at::Tensor& weight, const at::Tensor& mask, at::Tensor& out);
};

// ---- The per-step kernels on packed weights ----------------------------------------------------------

// The row blocks of the per-step kernels: each group's B rows in blocks of `rows` (a group's last
// block may be shorter), numbered group by group, per_group to a group.
struct RowBlocks {
  int64_t B, rows, per_group;

  struct Block {
    int64_t g, b0, rows;  // group, first batch row, rows
  };
  Block operator[](int64_t k) const {
    const int64_t g = k / per_group, b0 = (k % per_group) * rows;
    return {g, b0, std::min(rows, B - b0)};
  }
};

// Blocks of at most kMaxRows rows. When each step is split over the threads (fewer groups than
// threads), the blocks are evened out so that every thread gets as many rows: at B = 40 on 2 threads,
// 8 blocks of 5 rather than 4 + 3 blocks of 6.
RowBlocks row_blocks(int64_t G, int64_t B) {
  int64_t blocks = (B + kMaxRows - 1) / kMaxRows;
  const int64_t threads = at::get_num_threads();
  if (G < threads) {
    const int64_t even = (G * blocks + threads - 1) / threads * threads;
    blocks = std::min(B, (even + G - 1) / G);
  }
  const int64_t rows = (B + blocks - 1) / blocks;
  return {B, rows, (B + rows - 1) / rows};
}

// One forward step for row blocks [begin, end): pre += h_prev @ W_hh^T (w_hh_t packed
// [G][4H/kPanel][H][kPanel]), then the gates of those rows (bias [G][4H]).
template <typename T>
HAPRUNED_SIMD_CLONES void forward_step_blocks(int64_t begin, int64_t end, const RowBlocks& blocks,
                                              const ForwardStep<T>& step, const T* w_hh_t, const T* bias, int64_t H) {
  const int64_t panel_group_stride = ((4 * H + kPanel<T> - 1) / kPanel<T>) * H * kPanel<T>;
  for (int64_t k = begin; k < end; ++k) {
    const auto [g, b0, rows] = blocks[k];
    const int64_t r0 = g * blocks.B + b0;
    T* pre = step.gates + g * step.gate_stride + b0 * 4 * H;
    block_times_panels<T, true>(rows, step.h_prev + r0 * H, H, w_hh_t + g * panel_group_stride, H, 4 * H, pre, 4 * H);
    for (int64_t r = 0; r < rows; ++r)
      gates_forward_row(pre + r * 4 * H, bias + g * 4 * H, step.c_prev + (r0 + r) * H, step.c_new + (r0 + r) * H,
                        step.h_new + (r0 + r) * H, H);
  }
}

// One backward step for row blocks [begin, end): the gate gradients of those rows, then their
// recurrent gradient dh_prev = d_pre @ W_hh (w_hh packed [G][H/kPanel][4H][kPanel]).
template <typename T>
HAPRUNED_SIMD_CLONES void backward_step_blocks(int64_t begin, int64_t end, const RowBlocks& blocks,
                                               const BackwardStep<T>& step, const T* w_hh, int64_t H) {
  const int64_t panel_group_stride = ((H + kPanel<T> - 1) / kPanel<T>) * 4 * H * kPanel<T>;
  for (int64_t k = begin; k < end; ++k) {
    const auto [g, b0, rows] = blocks[k];
    const int64_t r0 = g * blocks.B + b0, gate_row = g * step.gate_stride + b0 * 4 * H;
    for (int64_t r = 0; r < rows; ++r) gates_backward_row(step, gate_row + r * 4 * H, (r0 + r) * H, H);
    block_times_panels<T, false>(rows, step.d_pre + gate_row, 4 * H, w_hh + g * panel_group_stride, 4 * H, H,
                                 step.dh_prev + r0 * H, H);
  }
}

// Runs step(t, begin, end) on ranges of row blocks for every step t, in time order (reversed for
// the backward); block_work: the multiply-adds of one block in one step. Groups are independent: with
// a group per thread or more, each thread runs all steps of one group before the next, so that group's
// packed weights stay in its cache and nothing is shared between steps; with fewer groups, each step
// is split over the threads.
template <typename Step>
void for_each_step(int64_t T, bool reverse, int64_t G, const RowBlocks& blocks, int64_t block_work, const Step& step) {
  auto time = [&](int64_t i) { return reverse ? T - 1 - i : i; };
  const int64_t per_group = blocks.per_group;
  if (G >= at::get_num_threads()) {
    parallel_for(0, G, grain_for(T * per_group * block_work), [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g)
        for (int64_t i = 0; i < T; ++i) step(time(i), g * per_group, (g + 1) * per_group);
    });
  } else {
    for (int64_t i = 0; i < T; ++i)
      parallel_for(0, G * per_group, grain_for(block_work),
                   [&](int64_t begin, int64_t end) { step(time(i), begin, end); });
  }
}

// T steps, or one step at a larger batch: the input projection of every step in one GEMM, then each
// step's recurrent product on the packed W_hh, fused with the gates.
template <typename T>
void forward_packed(const LstmShape& s, const LstmWeights& weights, const at::Tensor& bias, LstmSequence& seq) {
  // Straight into the gates ([G, T*B, 4H]); the gate loop adds the bias.
  at::Tensor gates_flat = seq.gates.view({s.G, s.T * s.B, 4 * s.H});
  at::bmm_out(gates_flat, by_group(seq.x, s), masked_weight<CpuLstm>(weights.w_ih, weights.mask_ih).transpose(1, 2));
  const at::Tensor w_hh_t = pack_panels<T>(weights.w_hh, weights.mask_hh, /*transpose=*/true);
  const RowBlocks blocks = row_blocks(s.G, s.B);
  const ForwardArrays<T> arrays = forward_arrays<T>(s, seq);
  const T *packed = w_hh_t.const_data_ptr<T>(), *b = bias.const_data_ptr<T>();
  const int64_t block_work = blocks.rows * 4 * s.H * s.H;
  for_each_step(s.T, /*reverse=*/false, s.G, blocks, block_work, [&](int64_t t, int64_t begin, int64_t end) {
    forward_step_blocks(begin, end, blocks, arrays.step(t), packed, b, s.H);
  });
}

template <typename T>
void backward_packed(const LstmShape& s, const LstmWeights& weights, const LstmSequence& seq, LstmGrads& grad,
                     const LstmBackwardBuffers& buffers) {
  const at::Tensor w_hh = pack_panels<T>(weights.w_hh, weights.mask_hh, /*transpose=*/false);
  const RowBlocks blocks = row_blocks(s.G, s.B);
  const BackwardArrays<T> arrays = backward_arrays<T>(s, seq, grad, buffers);
  const T* packed = w_hh.const_data_ptr<T>();
  const int64_t block_work = blocks.rows * 4 * s.H * s.H;
  for_each_step(s.T, /*reverse=*/true, s.G, blocks, block_work, [&](int64_t t, int64_t begin, int64_t end) {
    backward_step_blocks(begin, end, blocks, arrays.step(t), packed, s.H);
  });
}

// ---- The single step at a small batch, in the dot-product form ---------------------------------------

// Single steps with batches up to this size take the dot-product path (measured on AVX2, G = 10,
// H = 128: 1.7x faster than packing + GEMM at B = 16, level at B = 32).
constexpr int64_t kFusedMaxBatch = 16;

// One layer's weights in place: w_ih [G][4H][I], w_hh [G][4H][H], their masks read as M (nullptr:
// none), bias [G][4H].
template <typename T, typename M>
struct WeightArrays {
  const T* w_ih;
  const T* w_hh;
  const M* mask_ih;
  const M* mask_hh;
  const T* bias;
};

// The small-batch single step for groups [begin, end): pre-activations in the dot-product form,
// then the gate loop. x: [G][B][I].
template <typename T, typename M>
HAPRUNED_SIMD_CLONES void dot_step_groups(int64_t begin, int64_t end, const LstmShape& s, const T* x,
                                          const WeightArrays<T, M>& w, const ForwardStep<T>& step) {
  const int64_t B = s.B, I = s.I, H = s.H, rows = 4 * H;
  for (int64_t g = begin; g < end; ++g) {
    for (int64_t b0 = 0; b0 < B; b0 += 4) {
      const int64_t r = g * B + b0;  // one step: row r of the gates at r * 4H
      const DotOperand<T, M> ih{x + r * I, I, w.w_ih + g * rows * I,
                                w.mask_ih ? w.mask_ih + g * rows * I : w.mask_ih, I};
      const DotOperand<T, M> hh{step.h_prev + r * H, H, w.w_hh + g * rows * H,
                                w.mask_hh ? w.mask_hh + g * rows * H : w.mask_hh, H};
      T* pre = step.gates + r * rows;
      switch (std::min<int64_t>(4, B - b0)) {
        case 1: dot_rows<T, M, 1>(ih, hh, rows, pre, rows); break;
        case 2: dot_rows<T, M, 2>(ih, hh, rows, pre, rows); break;
        case 3: dot_rows<T, M, 3>(ih, hh, rows, pre, rows); break;
        default: dot_rows<T, M, 4>(ih, hh, rows, pre, rows); break;
      }
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r = g * B + b;
      gates_forward_row(step.gates + r * rows, w.bias + g * rows, step.c_prev + r * H, step.c_new + r * H,
                        step.h_new + r * H, H);
    }
  }
}

template <typename T, typename M>
void forward_dot(const LstmShape& s, const WeightArrays<T, M>& w, LstmSequence& seq) {
  const ForwardStep<T> step = forward_arrays<T>(s, seq).step(0);
  const T* x = seq.x.const_data_ptr<T>();
  parallel_for(0, s.G, grain_for(s.B * 4 * s.H * (s.I + s.H)),
               [&](int64_t begin, int64_t end) { dot_step_groups(begin, end, s, x, w, step); });
}

bool is_bool_or_none(const c10::optional<at::Tensor>& mask) { return !mask || mask->scalar_type() == at::kBool; }

// The single small-batch step. Both masks are read in one type: bool (as bytes, which load_masked turns
// into lanes of 0 and 1) when both are bool or absent, else the weights' dtype.
template <typename T>
void forward_small_batch(const LstmShape& s, const LstmWeights& weights, const at::Tensor& bias, LstmSequence& seq) {
  const T *w_ih = weights.w_ih.const_data_ptr<T>(), *w_hh = weights.w_hh.const_data_ptr<T>();
  if (is_bool_or_none(weights.mask_ih) && is_bool_or_none(weights.mask_hh)) {
    forward_dot<T, uint8_t>(s, {w_ih, w_hh, bool_mask_data(weights.mask_ih), bool_mask_data(weights.mask_hh),
                                bias.const_data_ptr<T>()}, seq);
    return;
  }
  const auto dtype = seq.x.scalar_type();
  const c10::optional<at::Tensor> mask_ih = weights.mask_ih ? c10::optional(weights.mask_ih->to(dtype)) : c10::nullopt;
  const c10::optional<at::Tensor> mask_hh = weights.mask_hh ? c10::optional(weights.mask_hh->to(dtype)) : c10::nullopt;
  forward_dot<T, T>(s, {w_ih, w_hh, typed_mask_data<T>(mask_ih), typed_mask_data<T>(mask_hh), bias.const_data_ptr<T>()},
                    seq);
}

// ---- The backend ---------------------------------------------------------------------------------------

void CpuLstm::forward(const LstmShape& s, const LstmWeights& weights, const at::Tensor& bias, LstmSequence& seq) {
  AT_DISPATCH_FLOATING_TYPES(seq.x.scalar_type(), "masked_lstm_forward_cpu", [&] {
    if (s.T == 1 && s.B <= kFusedMaxBatch)
      forward_small_batch<scalar_t>(s, weights, bias, seq);
    else
      forward_packed<scalar_t>(s, weights, bias, seq);
  });
}

void CpuLstm::backward_steps(const LstmShape& s, const LstmWeights& weights, const LstmSequence& seq, LstmGrads& grad,
                             const LstmBackwardBuffers& buffers) {
  AT_DISPATCH_FLOATING_TYPES(seq.x.scalar_type(), "masked_lstm_backward_cpu",
                             [&] { backward_packed<scalar_t>(s, weights, seq, grad, buffers); });
}

// MKL is several times slower when b has few columns (a first layer's input size) than on the
// transposed product, which puts them on the rows.
void CpuLstm::bmm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (b.size(2) < 32)
    out.copy_(at::bmm(b.transpose(1, 2), a.transpose(1, 2)).transpose(1, 2));
  else
    at::bmm_out(out, a, b);
}

// ATen's multiply by a bool mask converts it element by element, about 5x slower than by a mask of the
// weight's dtype, so bool masks are applied here instead.
void CpuLstm::mask_into(const at::Tensor& weight, const at::Tensor& mask, at::Tensor& out) {
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

}  // namespace

TORCH_LIBRARY_IMPL(hapruned, CPU, m) { register_lstm_kernels<CpuLstm>(m); }

}  // namespace hapruned
