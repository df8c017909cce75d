// What the CPU and CUDA masked-LSTM ops share: the gate maths of one hidden unit (host and device
// code), the tensors and raw arrays of a call, the op entry points (input checks, output allocation)
// and the tail of the backward (the weight, bias and input gradients of all steps at once).
//
// A backend is a struct of static functions (CpuLstm in csrc/cpu/lstm.cpp, CudaLstm in
// csrc/cuda/lstm.cuh); forward and backward_steps are called only for non-empty shapes (G, B, H > 0):
//   kDevice                                        the device type its kernels are registered for
//   forward(shape, weights, bias, seq)             writes seq.y, seq.cs and seq.gates
//   backward_steps(shape, weights, seq, grad, buffers)
//                                                  the recurrence, last step first: writes buffers.d_pre
//                                                  and grad.h0 (dh carried in buffers.dh_carry, dc in grad.c0)
//   bmm_into(out, a, b)                            out = a @ b for batches of matrices
//   mask_into(weight, mask, out)                   out = weight * mask (out may be weight)
#pragma once
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <tuple>

#include "checks.h"
#include "host_device.h"

namespace hapruned {

// ---- The gate maths of one hidden unit -------------------------------------------------------------
// Math is the backend's activations: a struct with static sigmoid(x) and tanh(x) (the CPU's are
// vectorisable approximations, CUDA's the libdevice functions). Everything is passed by value: the
// CPU gate loops vectorise only when no local of theirs has its address taken.

// The four gates of one hidden unit, in the order of the ops' gate rows: i, f, g, o.
template <typename T>
struct Gates {
  T i, f, g, o;
};

// Unit j's gates in a gate row [4H] (four blocks of H: i, f, g, o).
template <typename T>
HAPRUNED_HOST_DEVICE Gates<T> load_gates(const T* row, int64_t H, int64_t j) {
  return {row[j], row[H + j], row[2 * H + j], row[3 * H + j]};
}

template <typename T>
HAPRUNED_HOST_DEVICE void store_gates(T* row, int64_t H, int64_t j, Gates<T> gates) {
  row[j] = gates.i;
  row[H + j] = gates.f;
  row[2 * H + j] = gates.g;
  row[3 * H + j] = gates.o;
}

template <typename T>
HAPRUNED_HOST_DEVICE Gates<T> operator+(Gates<T> a, Gates<T> b) {
  return {a.i + b.i, a.f + b.f, a.g + b.g, a.o + b.o};
}

// The forward of one unit, in three steps: its gates' activations, then its new cell state, then its
// new hidden state.
template <typename Math, typename T>
HAPRUNED_HOST_DEVICE Gates<T> activate(Gates<T> pre) {
  return {Math::sigmoid(pre.i), Math::sigmoid(pre.f), Math::tanh(pre.g), Math::sigmoid(pre.o)};
}

template <typename T>
HAPRUNED_HOST_DEVICE T cell_update(Gates<T> act, T c_prev) {
  return act.f * c_prev + act.i * act.g;
}

template <typename Math, typename T>
HAPRUNED_HOST_DEVICE T hidden_state(Gates<T> act, T c) {
  return act.o * Math::tanh(c);
}

template <typename T>
struct UnitBackward {
  Gates<T> d_pre;  // the gradients of the gates' pre-activations
  T dc_prev;       // the gradient of the previous cell state
};

// Backward of one unit, from its activated gates, its cell states and the gradients arriving at its
// h and c (dh, dc: the step's output gradient plus the one carried from the next step).
template <typename Math, typename T>
HAPRUNED_HOST_DEVICE UnitBackward<T> unit_backward(Gates<T> act, T c_prev, T c_new, T dh, T dc) {
  const T tc = Math::tanh(c_new);
  dc = dc + dh * act.o * (T(1) - tc * tc);
  const Gates<T> d_pre{dc * act.g * act.i * (T(1) - act.i), dc * c_prev * act.f * (T(1) - act.f),
                       dc * act.i * (T(1) - act.g * act.g), dh * tc * act.o * (T(1) - act.o)};
  return {d_pre, dc * act.f};
}

// ---- The tensors of a call -------------------------------------------------------------------------

// One layer's weights for G groups. A mask is absent, bool, or of the weights' dtype, and multiplies
// its weight (so a NaN or an infinity in a pruned weight gives NaN).
struct LstmWeights {
  at::Tensor w_ih;  // [G, 4H, I]
  at::Tensor w_hh;  // [G, 4H, H]
  c10::optional<at::Tensor> mask_ih, mask_hh;
};

// T steps of one layer: the inputs, and the states the forward writes and the backward reads.
struct LstmSequence {
  at::Tensor x;       // [T, G, B, I]
  at::Tensor h0, c0;  // [G, B, H]
  at::Tensor y, cs;   // [T, G, B, H]: the hidden and cell states of every step (y unread by the cell's backward)
  at::Tensor gates;   // [G, T, B, 4H]: the activated gates of every step
};

// The gradients of T steps: those arriving at the outputs, and those of the inputs the backward writes.
struct LstmGrads {
  at::Tensor y, cs;                        // [T, G, B, H]
  at::Tensor x, h0, c0, w_ih, w_hh, bias;  // the shapes of the op's inputs (x: [G, B, I] for the cell)

  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> inputs() const {
    return {x, h0, c0, w_ih, w_hh, bias};
  }
};

// The gradients arriving at y and cs, with new tensors for those of the inputs (x's empty, [0], when
// the input needs no gradient: the backward then skips its product).
inline LstmGrads new_grads(const at::Tensor& grad_y, const at::Tensor& grad_cs, const at::Tensor& x,
                           const at::Tensor& h0, const at::Tensor& c0, const LstmWeights& weights, bool input_grad) {
  return {.y = grad_y,
          .cs = grad_cs,
          .x = input_grad ? at::empty_like(x) : at::empty({0}, x.options()),
          .h0 = at::empty_like(h0),
          .c0 = at::empty_like(c0),
          .w_ih = at::empty_like(weights.w_ih),
          .w_hh = at::empty_like(weights.w_hh),
          .bias = at::empty({weights.w_ih.size(0), weights.w_ih.size(1)}, x.options())};
}

// The backward's own arrays.
struct LstmBackwardBuffers {
  at::Tensor d_pre;     // [G, T, B, 4H]: the gradients of the pre-activations of every step
  at::Tensor dh_carry;  // [G, B, H]: the gradient of h_t, carried from step t + 1 to step t
};

// x [T, G, B, I] as [G, T*B, I]: every step's rows of a group together, for one GEMM over all steps.
inline at::Tensor by_group(const at::Tensor& x, const LstmShape& s) {
  return s.T == 1 ? x.view({s.G, s.B, s.I}) : x.permute({1, 0, 2, 3}).reshape({s.G, s.T * s.B, s.I});
}

template <typename Backend>
at::Tensor masked_weight(const at::Tensor& weight, const c10::optional<at::Tensor>& mask) {
  if (!mask) return weight;
  at::Tensor out = at::empty_like(weight);
  Backend::mask_into(weight, *mask, out);
  return out;
}

// ---- The raw arrays of each step (host or device memory) ---------------------------------------------
// Gate arrays [G, T, B, 4H] hold row (g, b) of step t at g * gate_stride + b * 4H from the step's start,
// with gate_stride = T * B * 4H; states [T, G, B, H] hold step t's [G, B, H] contiguously.

template <typename T>
struct ForwardStep {
  T* gates;             // the pre-activations (input projection) in, the activated gates out
  int64_t gate_stride;  // from one group's gate rows to the next's
  const T* h_prev;      // [G, B, H]: h0 at step 0, else y[t - 1]
  const T* c_prev;      // c0 at step 0, else cs[t - 1]
  T* h_new;             // y[t]
  T* c_new;             // cs[t]
};

template <typename T>
struct BackwardStep {
  const T* act;         // the step's activated gates, laid out as ForwardStep::gates
  T* d_pre;             // the gradients of its pre-activations, laid out alike
  int64_t gate_stride;  // from one group's gate rows to the next's
  const T* c_prev;      // [G, B, H]
  const T* c_new;
  const T* grad_h;      // arriving at the step's outputs
  const T* grad_c;
  const T* dh_carry;    // carried from step t + 1
  T* dc_carry;          // carried from step t + 1, overwritten with the gradient of c_prev
  T* dh_prev;           // where the gradient of h_prev goes: dh_carry, or grad.h0 at step 0
};

// Each step's arrays, from the base pointers of a call's tensors.
template <typename T>
struct ForwardArrays {
  LstmShape s;
  T* gates;
  const T *h0, *c0;
  T *y, *cs;

  ForwardStep<T> step(int64_t t) const {
    const int64_t state = s.G * s.B * s.H;
    return {.gates = gates + t * s.B * 4 * s.H,
            .gate_stride = s.T * s.B * 4 * s.H,
            .h_prev = t == 0 ? h0 : y + (t - 1) * state,
            .c_prev = t == 0 ? c0 : cs + (t - 1) * state,
            .h_new = y + t * state,
            .c_new = cs + t * state};
  }
};

template <typename T>
ForwardArrays<T> forward_arrays(const LstmShape& s, const LstmSequence& seq) {
  return {.s = s,
          .gates = seq.gates.data_ptr<T>(),
          .h0 = seq.h0.const_data_ptr<T>(),
          .c0 = seq.c0.const_data_ptr<T>(),
          .y = seq.y.data_ptr<T>(),
          .cs = seq.cs.data_ptr<T>()};
}

template <typename T>
struct BackwardArrays {
  LstmShape s;
  const T* act;
  T* d_pre;
  const T *c0, *cs, *grad_y, *grad_cs;
  T *dh_carry, *dc_carry, *grad_h0;

  BackwardStep<T> step(int64_t t) const {
    const int64_t state = s.G * s.B * s.H, gates = t * s.B * 4 * s.H;
    return {.act = act + gates,
            .d_pre = d_pre + gates,
            .gate_stride = s.T * s.B * 4 * s.H,
            .c_prev = t == 0 ? c0 : cs + (t - 1) * state,
            .c_new = cs + t * state,
            .grad_h = grad_y + t * state,
            .grad_c = grad_cs + t * state,
            .dh_carry = dh_carry,
            .dc_carry = dc_carry,
            .dh_prev = t == 0 ? grad_h0 : dh_carry};
  }
};

template <typename T>
BackwardArrays<T> backward_arrays(const LstmShape& s, const LstmSequence& seq, const LstmGrads& grad,
                                  const LstmBackwardBuffers& buffers) {
  return {.s = s,
          .act = seq.gates.const_data_ptr<T>(),
          .d_pre = buffers.d_pre.data_ptr<T>(),
          .c0 = seq.c0.const_data_ptr<T>(),
          .cs = seq.cs.const_data_ptr<T>(),
          .grad_y = grad.y.const_data_ptr<T>(),
          .grad_cs = grad.cs.const_data_ptr<T>(),
          .dh_carry = buffers.dh_carry.data_ptr<T>(),
          .dc_carry = grad.c0.data_ptr<T>(),
          .grad_h0 = grad.h0.data_ptr<T>()};
}

// ---- The forward, the backward and the ops ---------------------------------------------------------

template <typename Backend>
void lstm_forward(const LstmShape& s, const LstmWeights& weights, const at::Tensor& bias, LstmSequence& seq) {
  if (s.G == 0 || s.B == 0 || s.H == 0) return;  // nothing to compute
  Backend::forward(s, weights, bias, seq);
}

template <typename Backend>
void lstm_backward(const LstmShape& s, const LstmWeights& weights, const LstmSequence& seq, LstmGrads& grad) {
  const auto [T, G, B, I, H] = s;
  if (G == 0 || B == 0 || H == 0) {
    for (at::Tensor* g : {&grad.x, &grad.h0, &grad.c0, &grad.w_ih, &grad.w_hh, &grad.bias}) g->zero_();
    return;
  }
  const LstmBackwardBuffers buffers{.d_pre = at::empty({G, T, B, 4 * H}, seq.x.options()),
                                    .dh_carry = at::zeros({G, B, H}, seq.x.options())};
  grad.c0.zero_();  // carries dc from step to step, ends as the gradient of c0
  Backend::backward_steps(s, weights, seq, grad, buffers);
  // The weight, bias and input gradients of all steps at once, from every step's inputs (x and the
  // previous hidden state: h0, y[0 .. T-2]), grouped.
  const at::Tensor d_pre = buffers.d_pre.view({G, T * B, 4 * H});
  const at::Tensor h_by_group =
      T == 1 ? seq.h0
             : at::cat({seq.h0.unsqueeze(1), seq.y.slice(0, 0, T - 1).permute({1, 0, 2, 3})}, 1).view({G, T * B, H});
  Backend::bmm_into(grad.w_ih, d_pre.transpose(1, 2), by_group(seq.x, s));
  Backend::bmm_into(grad.w_hh, d_pre.transpose(1, 2), h_by_group);
  if (weights.mask_ih) Backend::mask_into(grad.w_ih, *weights.mask_ih, grad.w_ih);
  if (weights.mask_hh) Backend::mask_into(grad.w_hh, *weights.mask_hh, grad.w_hh);
  at::sum_out(grad.bias, d_pre, {1});
  if (grad.x.numel() == 0) return;  // not asked for (or nothing to compute)
  at::Tensor grad_x_by_group = T == 1 ? grad.x.view({G, B, I}) : at::empty({G, T * B, I}, seq.x.options());
  Backend::bmm_into(grad_x_by_group, d_pre, masked_weight<Backend>(weights.w_ih, weights.mask_ih));
  if (T > 1) grad.x.copy_(grad_x_by_group.view({G, T, B, I}).permute({1, 0, 2, 3}));
}

// x must be on the backend's device (a direct call with every tensor elsewhere is dispatched elsewhere).
template <typename Backend>
void check_device(const at::Tensor& x) {
  TORCH_CHECK(x.device().type() == Backend::kDevice, "x must be a ", c10::DeviceTypeName(Backend::kDevice),
              " tensor, got ", x.device());
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_lstm_cell(
    const at::Tensor& x, const at::Tensor& h, const at::Tensor& c, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& bias, const c10::optional<at::Tensor>& mask_ih, const c10::optional<at::Tensor>& mask_hh) {
  const LstmShape s = check_lstm_inputs(x, h, c, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/false);
  check_bias(bias, x, s);
  check_device<Backend>(x);
  const c10::DeviceGuard guard(x.device());  // a no-op on CPU
  at::Tensor h_new = at::empty_like(h), c_new = at::empty_like(c);
  LstmSequence seq{.x = x.unsqueeze(0),
                   .h0 = h,
                   .c0 = c,
                   .y = h_new.unsqueeze(0),
                   .cs = c_new.unsqueeze(0),
                   .gates = at::empty({s.G, s.B, 4 * s.H}, x.options())};
  lstm_forward<Backend>(s, {w_ih, w_hh, mask_ih, mask_hh}, bias, seq);
  return {h_new, c_new, seq.gates};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> masked_lstm_cell_backward(
    const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const c10::optional<at::Tensor>& mask_ih,
    const c10::optional<at::Tensor>& mask_hh, const at::Tensor& gates, const at::Tensor& c_new, bool input_grad) {
  const LstmShape s = check_lstm_inputs(x, h, c, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/false);
  check_like(grad_h, "grad_h", x, h.sizes());
  check_like(grad_c, "grad_c", x, h.sizes());
  check_like(gates, "gates", x, {s.G, s.B, 4 * s.H});
  check_like(c_new, "c_new", x, h.sizes());
  check_device<Backend>(x);
  const c10::DeviceGuard guard(x.device());
  const LstmWeights weights{w_ih, w_hh, mask_ih, mask_hh};
  LstmGrads grad = new_grads(grad_h.unsqueeze(0), grad_c.unsqueeze(0), x, h, c, weights, input_grad);
  const LstmSequence seq{.x = x.unsqueeze(0), .h0 = h, .c0 = c, .cs = c_new.unsqueeze(0), .gates = gates};
  lstm_backward<Backend>(s, weights, seq, grad);
  return grad.inputs();
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_lstm_seq(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& bias, const c10::optional<at::Tensor>& mask_ih, const c10::optional<at::Tensor>& mask_hh) {
  const LstmShape s = check_lstm_inputs(x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/true);
  check_bias(bias, x, s);
  check_device<Backend>(x);
  const c10::DeviceGuard guard(x.device());
  const at::Tensor y = at::empty({s.T, s.G, s.B, s.H}, x.options());
  LstmSequence seq{.x = x,
                   .h0 = h0,
                   .c0 = c0,
                   .y = y,
                   .cs = at::empty_like(y),
                   .gates = at::empty({s.G, s.T, s.B, 4 * s.H}, x.options())};
  lstm_forward<Backend>(s, {w_ih, w_hh, mask_ih, mask_hh}, bias, seq);
  return {seq.y, seq.cs, seq.gates};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> masked_lstm_seq_backward(
    const at::Tensor& grad_y, const at::Tensor& grad_cs, const at::Tensor& x, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh, const c10::optional<at::Tensor>& mask_ih,
    const c10::optional<at::Tensor>& mask_hh, const at::Tensor& y, const at::Tensor& cs, const at::Tensor& gates,
    bool input_grad) {
  const LstmShape s = check_lstm_inputs(x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/true);
  for (auto [tensor, name] : {std::pair{&grad_y, "grad_y"}, {&grad_cs, "grad_cs"}, {&y, "y"}, {&cs, "cs"}})
    check_like(*tensor, name, x, {s.T, s.G, s.B, s.H});
  check_like(gates, "gates", x, {s.G, s.T, s.B, 4 * s.H});
  check_device<Backend>(x);
  const c10::DeviceGuard guard(x.device());
  const LstmWeights weights{w_ih, w_hh, mask_ih, mask_hh};
  LstmGrads grad = new_grads(grad_y, grad_cs, x, h0, c0, weights, input_grad);
  lstm_backward<Backend>(s, weights, {.x = x, .h0 = h0, .c0 = c0, .y = y, .cs = cs, .gates = gates}, grad);
  return grad.inputs();
}

// Registers the backend's kernels of the four LSTM ops (in the TORCH_LIBRARY_IMPL block of its device).
template <typename Backend>
void register_lstm_kernels(torch::Library& m) {
  m.impl("masked_lstm_cell", &masked_lstm_cell<Backend>);
  m.impl("masked_lstm_cell_backward", &masked_lstm_cell_backward<Backend>);
  m.impl("masked_lstm_seq", &masked_lstm_seq<Backend>);
  m.impl("masked_lstm_seq_backward", &masked_lstm_seq_backward<Backend>);
}

}  // namespace hapruned
