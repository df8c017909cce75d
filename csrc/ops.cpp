// Schemas of the hapruned ops. Each backend registers its kernels with TORCH_LIBRARY_IMPL
// (csrc/cpu, csrc/cuda); hapruned/ops/library.py adds fake kernels, autograd and the
// pure-PyTorch fallback for any device without a kernel.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// An empty module: importing hapruned._C loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(hapruned, m) {
  // weight [G, M] float; n_prune int64 [G] on weight's device -> bool [G, M], True = kept, exactly
  // n_prune[g] False per row, among equal |w| the lower flat index pruned first.
  m.def("magnitude_prune_mask(Tensor weight, Tensor n_prune) -> Tensor");
  // One LSTM step for G groups -> (h_new [G,B,H], c_new [G,B,H], gates [G,B,4H] activated i,f,g,o).
  m.def(
      "masked_lstm_cell(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor bias, "
      "Tensor? mask_ih, Tensor? mask_hh) -> (Tensor, Tensor, Tensor)");
  // -> (grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_bias); weight grads masked.
  m.def(
      "masked_lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor x, Tensor h, Tensor c, "
      "Tensor w_ih, Tensor w_hh, Tensor? mask_ih, Tensor? mask_hh, Tensor gates, Tensor c_new) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // T steps: x [T,G,B,I], h0/c0 [G,B,H] -> (y [T,G,B,H] hidden states, cs [T,G,B,H] cell states,
  // gates [G,T,B,4H] activated, saved for backward).
  m.def(
      "masked_lstm_seq(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor bias, "
      "Tensor? mask_ih, Tensor? mask_hh) -> (Tensor, Tensor, Tensor)");
  // grad_y, grad_cs [T,G,B,H] -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias).
  m.def(
      "masked_lstm_seq_backward(Tensor grad_y, Tensor grad_cs, Tensor x, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? mask_ih, Tensor? mask_hh, Tensor y, Tensor cs, Tensor gates) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // One step of one layer whose W = [W_ih | W_hh] [4H, I+H] is CSR: x [B,I], h/c [B,H] float32, row_ptr
  // int32 [4H+1], col_idx uint8/int16/int32 [nnz], values float32/float16 [nnz], bias [4H] -> (h', c').
  m.def(
      "sparse_lstm_step(Tensor x, Tensor h, Tensor c, Tensor row_ptr, Tensor col_idx, Tensor values, "
      "Tensor bias) -> (Tensor, Tensor)");
}
