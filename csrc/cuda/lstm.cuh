// CUDA masked LSTM: the recurrent part of the cell (one step) and of the sequence (T steps of one
// layer), forward and backward, with the semantics of csrc/cpu/lstm.cpp. The entry points and the
// backward's weight, bias and input gradients are csrc/lstm.h's, shared with the CPU.
//
// Every launch covers all groups: the masks are applied once per call (one multiply per weight), the
// GEMMs are cuBLAS batched matmuls over the groups (the input projection of all T steps in one), and
// per step one fused kernel computes the gates, the cell update and the hidden state (forward) or
// all pre-activation gradients and the cell-state gradient (backward). Included by lstm.cu (the CUDA
// build) and csrc/emu/kernels.cpp (the emulated device, where the GEMMs are the CPU's).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../lstm.h"
#include "launch.cuh"

namespace hapruned {
namespace cuda {
namespace {

// The activations of the CUDA gate maths (host code too, as the gate maths are).
struct CudaMath {
  HAPRUNED_HOST_DEVICE static float exp(float x) { return expf(x); }
  HAPRUNED_HOST_DEVICE static double exp(double x) { return ::exp(x); }
  HAPRUNED_HOST_DEVICE static float tanh(float x) { return tanhf(x); }
  HAPRUNED_HOST_DEVICE static double tanh(double x) { return ::tanh(x); }
  template <typename T>
  HAPRUNED_HOST_DEVICE static T sigmoid(T x) {
    return T(1) / (T(1) + exp(-x));
  }
};

// Element idx = (g * B + b) * H + j of the [G, B, H] states: unit j of row (g, b). rec: [G, B, 4H], the
// recurrent term added to the pre-activations.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gates_forward_kernel(ForwardStep<T> step, const T* __restrict__ rec, int64_t B, int64_t H, int64_t n) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n - HAPRUNED_FAULT(5);
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / H, j = idx % H;
    T* row = step.gates + (r / B) * step.gate_stride + (r % B) * 4 * H;
    const Gates<T> act = activate<CudaMath>(load_gates(row, H, j) + load_gates(rec + r * 4 * H, H, j));
    const T c = cell_update(act, step.c_prev[idx]);
    store_gates(row, H, j, act);
    step.c_new[idx] = c;
    step.h_new[idx] = hidden_state<CudaMath>(act, c);
  }
}

// The gate gradients and the gradient of c_prev of every unit of a step, indexed as above.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gates_backward_kernel(BackwardStep<T> step, int64_t B, int64_t H, int64_t n) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x + HAPRUNED_FAULT(6); idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / H, j = idx % H;
    const int64_t row = (r / B) * step.gate_stride + (r % B) * 4 * H;
    const UnitBackward<T> unit =
        unit_backward<CudaMath>(load_gates(step.act + row, H, j), step.c_prev[idx], step.c_new[idx],
                                step.grad_h[idx] + step.dh_carry[idx], step.grad_c[idx] + step.dc_carry[idx]);
    store_gates(step.d_pre + row, H, j, unit.d_pre);
    step.dc_carry[idx] = unit.dc_prev;
  }
}

struct CudaLstm {
  static constexpr c10::DeviceType kDevice = kDeviceType;

  static void forward(const LstmShape& s, const LstmWeights& weights, const at::Tensor& bias, LstmSequence& seq) {
    const at::Tensor w_ih_t = masked_weight<CudaLstm>(weights.w_ih, weights.mask_ih).transpose(1, 2);
    const at::Tensor w_hh_t = masked_weight<CudaLstm>(weights.w_hh, weights.mask_hh).transpose(1, 2);
    // Input projection of every step at once, with the bias, straight into the gates ([G, T*B, 4H]).
    at::Tensor gates_flat = seq.gates.view({s.G, s.T * s.B, 4 * s.H});
    at::baddbmm_out(gates_flat, bias.unsqueeze(1), by_group(seq.x, s), w_ih_t);
    at::Tensor recurrent = at::empty({s.G, s.B, 4 * s.H}, seq.x.options());
    const int64_t n = s.G * s.B * s.H;
    AT_DISPATCH_FLOATING_TYPES(seq.x.scalar_type(), "masked_lstm_forward_cuda", [&] {
      const ForwardArrays<scalar_t> arrays = forward_arrays<scalar_t>(s, seq);
      for (int64_t t = 0; t < s.T; ++t) {
        at::bmm_out(recurrent, t == 0 ? seq.h0 : seq.y[t - 1], w_hh_t);
        launch(gates_forward_kernel<scalar_t>, elementwise_blocks(n), arrays.step(t),
               recurrent.const_data_ptr<scalar_t>(), s.B, s.H, n);
      }
    });
  }

  static void backward_steps(const LstmShape& s, const LstmWeights& weights, const LstmSequence& seq,
                             LstmGrads& grad, const LstmBackwardBuffers& buffers) {
    const at::Tensor w_hh = masked_weight<CudaLstm>(weights.w_hh, weights.mask_hh);
    const int64_t n = s.G * s.B * s.H;
    AT_DISPATCH_FLOATING_TYPES(seq.x.scalar_type(), "masked_lstm_backward_cuda", [&] {
      const BackwardArrays<scalar_t> arrays = backward_arrays<scalar_t>(s, seq, grad, buffers);
      for (int64_t t = s.T - 1; t >= 0; --t) {
        launch(gates_backward_kernel<scalar_t>, elementwise_blocks(n), arrays.step(t), s.B, s.H, n);
        at::Tensor dh_prev = t == 0 ? grad.h0 : buffers.dh_carry;
        at::bmm_out(dh_prev, buffers.d_pre.select(1, t), w_hh);
      }
    });
  }

  static void bmm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) { at::bmm_out(out, a, b); }

  static void mask_into(const at::Tensor& weight, const at::Tensor& mask, at::Tensor& out) {
    at::mul_out(out, weight, mask);
  }
};

}  // namespace
}  // namespace cuda
}  // namespace hapruned
