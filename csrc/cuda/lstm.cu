// CUDA masked LSTM: the cell (one step) and the sequence (T steps of one layer), forward and backward,
// with the same structure and semantics as csrc/cpu/lstm.cpp.
//
// Every launch covers all groups: the masks are applied once per call (one multiply per weight), the
// GEMMs are cuBLAS batched matmuls over the groups (the input projection of all T steps in one), and
// per step one fused kernel computes the gates, the cell update and the hidden state (forward) or
// all pre-activation gradients and the cell-state gradient (backward).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../checks.h"
#include "launch.cuh"

namespace hapruned {
namespace cuda {
namespace {

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }
template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}

// Element idx = (g * B + b) * H + j of the [G, B, H] arrays. Gate arrays hold row (g, b) at
// g * group_stride + b * 4H, so a step t of [G, T, B, 4H] gates is addressed with group_stride T*B*4H.
// pre: pre-activations, overwritten with the activated gates i, f, g, o; rec: [G, B, 4H] recurrent
// term added to pre, or null.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gates_forward_kernel(T* __restrict__ pre, int64_t group_stride, const T* __restrict__ rec,
                         const T* __restrict__ c_prev, T* __restrict__ c_new, T* __restrict__ h_new, int64_t B,
                         int64_t H, int64_t n) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / H, j = idx % H;
    T* p = pre + (r / B) * group_stride + (r % B) * 4 * H + j;
    T pi = p[0], pf = p[H], pg = p[2 * H], po = p[3 * H];
    if (rec != nullptr) {
      const T* q = rec + r * 4 * H + j;
      pi += q[0];
      pf += q[H];
      pg += q[2 * H];
      po += q[3 * H];
    }
    const T i = sigmoid(pi), f = sigmoid(pf), g = tanh_(pg), o = sigmoid(po);
    const T c = f * c_prev[idx] + i * g;
    p[0] = i;
    p[H] = f;
    p[2 * H] = g;
    p[3 * H] = o;
    c_new[idx] = c;
    h_new[idx] = o * tanh_(c);
  }
}

// From the activated gates act, the cell states and the incoming gradients (dh = grad_h + dh_carry,
// dc = grad_c + dc_carry): the pre-activation gradients d_pre (laid out like act) and the gradient of
// the previous cell state, written over dc_carry.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gates_backward_kernel(const T* __restrict__ act, T* __restrict__ d_pre, int64_t group_stride,
                          const T* __restrict__ c_prev, const T* __restrict__ c_new, const T* __restrict__ grad_h,
                          const T* __restrict__ dh_carry, const T* __restrict__ grad_c, T* __restrict__ dc_carry,
                          int64_t B, int64_t H, int64_t n) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / H, j = idx % H;
    const int64_t off = (r / B) * group_stride + (r % B) * 4 * H + j;
    const T i = act[off], f = act[off + H], g = act[off + 2 * H], o = act[off + 3 * H];
    const T tc = tanh_(c_new[idx]);
    const T dh = grad_h[idx] + dh_carry[idx];
    const T dc = grad_c[idx] + dc_carry[idx] + dh * o * (T(1) - tc * tc);
    d_pre[off] = dc * g * i * (T(1) - i);
    d_pre[off + H] = dc * c_prev[idx] * f * (T(1) - f);
    d_pre[off + 2 * H] = dc * i * (T(1) - g * g);
    d_pre[off + 3 * H] = dh * tc * o * (T(1) - o);
    dc_carry[idx] = dc * f;
  }
}

// weight * mask, the mask bool or the weight's dtype (a NaN or an infinity in a pruned weight gives NaN).
at::Tensor masked_weight(const at::Tensor& weight, const c10::optional<at::Tensor>& mask) {
  return mask ? weight * *mask : weight;
}

void check_cuda(const at::Tensor& x) { TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device()); }

// Forward of T steps into preallocated outputs: y, cs [T,G,B,H] and gates [G,T,B,4H]; x [T,G,B,I].
void lstm_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                  const at::Tensor& w_hh, const at::Tensor& bias, const c10::optional<at::Tensor>& mask_ih,
                  const c10::optional<at::Tensor>& mask_hh, const LstmShape& s, at::Tensor& y, at::Tensor& cs,
                  at::Tensor& gates) {
  const auto [T, G, B, I, H] = s;
  if (G == 0 || B == 0 || H == 0) return;  // nothing to compute (and no empty grid to launch)
  const at::Tensor w_ih_t = masked_weight(w_ih, mask_ih).transpose(1, 2);
  const at::Tensor w_hh_t = masked_weight(w_hh, mask_hh).transpose(1, 2);
  // Input projection of every step at once, straight into gates ([G, T*B, 4H]).
  const at::Tensor x_by_group = T == 1 ? x.view({G, B, I}) : x.permute({1, 0, 2, 3}).reshape({G, T * B, I});
  at::Tensor gates_flat = gates.view({G, T * B, 4 * H});
  at::baddbmm_out(gates_flat, bias.unsqueeze(1), x_by_group, w_ih_t);
  at::Tensor recurrent = at::empty({G, B, 4 * H}, x.options());
  const int64_t n = G * B * H;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "masked_lstm_forward_cuda", [&] {
    scalar_t* gates_ptr = gates.data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor h_prev = t == 0 ? h0 : y[t - 1];
      const at::Tensor c_prev = t == 0 ? c0 : cs[t - 1];
      at::bmm_out(recurrent, h_prev, w_hh_t);
      gates_forward_kernel<scalar_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(
          gates_ptr + t * B * 4 * H, T * B * 4 * H, recurrent.const_data_ptr<scalar_t>(),
          c_prev.const_data_ptr<scalar_t>(), cs[t].data_ptr<scalar_t>(), y[t].data_ptr<scalar_t>(), B, H, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
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
  if (G == 0 || B == 0 || H == 0) {
    for (at::Tensor* grad : {&grad_x, &grad_h0, &grad_c0, &grad_w_ih, &grad_w_hh, &grad_bias}) grad->zero_();
    return;
  }
  const at::Tensor w_ih_eff = masked_weight(w_ih, mask_ih);
  const at::Tensor w_hh_eff = masked_weight(w_hh, mask_hh);
  at::Tensor d_pre = at::empty({G, T, B, 4 * H}, x.options());  // gradients of the pre-activations
  at::Tensor dh_carry = at::zeros({G, B, H}, x.options());
  grad_c0.zero_();  // carries dc from step to step, ends as the gradient of c0
  const int64_t n = G * B * H;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "masked_lstm_backward_cuda", [&] {
    const scalar_t* act = gates.const_data_ptr<scalar_t>();
    scalar_t* d_pre_ptr = d_pre.data_ptr<scalar_t>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const at::Tensor c_prev = t == 0 ? c0 : cs[t - 1];
      gates_backward_kernel<scalar_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(
          act + t * B * 4 * H, d_pre_ptr + t * B * 4 * H, T * B * 4 * H, c_prev.const_data_ptr<scalar_t>(),
          cs[t].const_data_ptr<scalar_t>(), grad_y[t].const_data_ptr<scalar_t>(), dh_carry.const_data_ptr<scalar_t>(),
          grad_cs[t].const_data_ptr<scalar_t>(), grad_c0.data_ptr<scalar_t>(), B, H, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      at::Tensor dh_target = t == 0 ? grad_h0 : dh_carry;
      at::bmm_out(dh_target, d_pre.select(1, t), w_hh_eff);
    }
  });
  const at::Tensor d_pre_flat = d_pre.view({G, T * B, 4 * H});
  // Inputs of every step, grouped: x and the previous hidden state ([h0, y[0..T-2]]).
  const at::Tensor x_by_group = T == 1 ? x.view({G, B, I}) : x.permute({1, 0, 2, 3}).reshape({G, T * B, I});
  const at::Tensor h_by_group =
      T == 1 ? h0 : at::cat({h0.unsqueeze(1), y.slice(0, 0, T - 1).permute({1, 0, 2, 3})}, 1).view({G, T * B, H});
  at::bmm_out(grad_w_ih, d_pre_flat.transpose(1, 2), x_by_group);
  at::bmm_out(grad_w_hh, d_pre_flat.transpose(1, 2), h_by_group);
  if (mask_ih) grad_w_ih.mul_(*mask_ih);
  if (mask_hh) grad_w_hh.mul_(*mask_hh);
  at::sum_out(grad_bias, d_pre_flat, {1});
  if (T == 1) {
    at::Tensor grad_x_view = grad_x.view({G, B, I});
    at::bmm_out(grad_x_view, d_pre_flat, w_ih_eff);
  } else {
    grad_x.copy_(at::bmm(d_pre_flat, w_ih_eff).view({G, T, B, I}).permute({1, 0, 2, 3}));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_lstm_cell_cuda(
    const at::Tensor& x, const at::Tensor& h, const at::Tensor& c, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& bias, const c10::optional<at::Tensor>& mask_ih, const c10::optional<at::Tensor>& mask_hh) {
  const LstmShape s = check_lstm_inputs(x, h, c, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/false);
  check_bias(bias, x, s);
  check_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor h_new = at::empty_like(h), c_new = at::empty_like(c);
  at::Tensor gates = at::empty({s.G, s.B, 4 * s.H}, x.options());
  at::Tensor y = h_new.unsqueeze(0), cs = c_new.unsqueeze(0);
  lstm_forward(x.unsqueeze(0), h, c, w_ih, w_hh, bias, mask_ih, mask_hh, s, y, cs, gates);
  return {h_new, c_new, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> masked_lstm_cell_backward_cuda(
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
  check_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor grad_x = at::empty_like(x), grad_h0 = at::empty_like(h), grad_c0 = at::empty_like(c);
  at::Tensor grad_w_ih = at::empty_like(w_ih), grad_w_hh = at::empty_like(w_hh);
  at::Tensor grad_bias = at::empty({s.G, 4 * s.H}, x.options());
  at::Tensor grad_x_seq = grad_x.unsqueeze(0);
  lstm_backward(grad_h.unsqueeze(0), grad_c.unsqueeze(0), x.unsqueeze(0), h, c, w_ih, w_hh, mask_ih, mask_hh,
                at::Tensor() /* y is only read for T > 1 */, c_new.unsqueeze(0), gates, s, grad_x_seq, grad_h0,
                grad_c0, grad_w_ih, grad_w_hh, grad_bias);
  return {grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_lstm_seq_cuda(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& bias, const c10::optional<at::Tensor>& mask_ih, const c10::optional<at::Tensor>& mask_hh) {
  const LstmShape s = check_lstm_inputs(x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, /*sequence=*/true);
  check_bias(bias, x, s);
  check_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({s.T, s.G, s.B, s.H}, x.options()), cs = at::empty_like(y);
  at::Tensor gates = at::empty({s.G, s.T, s.B, 4 * s.H}, x.options());
  lstm_forward(x, h0, c0, w_ih, w_hh, bias, mask_ih, mask_hh, s, y, cs, gates);
  return {y, cs, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> masked_lstm_seq_backward_cuda(
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
  check_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor grad_x = at::empty_like(x), grad_h0 = at::empty_like(h0), grad_c0 = at::empty_like(c0);
  at::Tensor grad_w_ih = at::empty_like(w_ih), grad_w_hh = at::empty_like(w_hh);
  at::Tensor grad_bias = at::empty({s.G, 4 * s.H}, x.options());
  lstm_backward(grad_y, grad_cs, x, h0, c0, w_ih, w_hh, mask_ih, mask_hh, y, cs, gates, s, grad_x, grad_h0,
                grad_c0, grad_w_ih, grad_w_hh, grad_bias);
  return {grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(hapruned, CUDA, m) {
  m.impl("masked_lstm_cell", &cuda::masked_lstm_cell_cuda);
  m.impl("masked_lstm_cell_backward", &cuda::masked_lstm_cell_backward_cuda);
  m.impl("masked_lstm_seq", &cuda::masked_lstm_seq_cuda);
  m.impl("masked_lstm_seq_backward", &cuda::masked_lstm_seq_backward_cuda);
}

}  // namespace hapruned
