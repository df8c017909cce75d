// Schemas of the hapruned ops. Each backend registers its kernels with TORCH_LIBRARY_IMPL
// (csrc/cpu, csrc/cuda); hapruned/ops/library.py adds fake kernels, autograd and the
// pure-PyTorch fallback for any device without a kernel.
#include <Python.h>
#include <torch/library.h>

#include <cstring>

#include "cpu/isa.h"

namespace {

using hapruned::CpuIsa;

constexpr CpuIsa kIsas[] = {CpuIsa::kAvx512, CpuIsa::kAvx2, CpuIsa::kBaseline};

// _cpu_isa() -> str: the instruction set of the CPU kernels (see csrc/cpu/isa.h).
PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(hapruned::isa_name(hapruned::current_isa())); }

// _supported_cpu_isas() -> tuple of str, widest first.
PyObject* supported_cpu_isas(PyObject*, PyObject*) {
  const char* names[3];
  int count = 0;
  for (CpuIsa isa : kIsas)
    if (hapruned::cpu_supports(isa)) names[count++] = hapruned::isa_name(isa);
  switch (count) {
    case 1: return Py_BuildValue("(s)", names[0]);
    case 2: return Py_BuildValue("(ss)", names[0], names[1]);
    default: return Py_BuildValue("(sss)", names[0], names[1], names[2]);
  }
}

// _set_cpu_isa(name: str) -> None; ValueError for a name the CPU lacks (the wrapper names the choices).
PyObject* set_cpu_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8AndSize(arg, nullptr);
  if (name == nullptr) return nullptr;
  for (CpuIsa isa : kIsas)
    if (std::strcmp(name, hapruned::isa_name(isa)) == 0 && hapruned::set_cpu_isa(isa)) Py_RETURN_NONE;
  PyErr_Format(PyExc_ValueError, "this CPU has no instruction set %R for the kernels", arg);
  return nullptr;
}

PyMethodDef methods[] = {
    {"_cpu_isa", cpu_isa, METH_NOARGS, "The instruction set of the CPU kernels."},
    {"_supported_cpu_isas", supported_cpu_isas, METH_NOARGS, "The instruction sets this CPU has, widest first."},
    {"_set_cpu_isa", set_cpu_isa, METH_O, "Run the CPU kernels with the named instruction set."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
// Importing hapruned._C loads this library, which runs the registrations below; its functions choose
// the CPU kernels' instruction set.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
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
  // -> (grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_bias); weight grads masked; grad_x empty [0]
  // without input_grad (the product is skipped).
  m.def(
      "masked_lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor x, Tensor h, Tensor c, "
      "Tensor w_ih, Tensor w_hh, Tensor? mask_ih, Tensor? mask_hh, Tensor gates, Tensor c_new, "
      "bool input_grad=True) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // T steps: x [T,G,B,I], h0/c0 [G,B,H] -> (y [T,G,B,H] hidden states, cs [T,G,B,H] cell states,
  // gates [G,T,B,4H] activated, saved for backward).
  m.def(
      "masked_lstm_seq(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor bias, "
      "Tensor? mask_ih, Tensor? mask_hh) -> (Tensor, Tensor, Tensor)");
  // grad_y, grad_cs [T,G,B,H] -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias); grad_x empty
  // [0] without input_grad.
  m.def(
      "masked_lstm_seq_backward(Tensor grad_y, Tensor grad_cs, Tensor x, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? mask_ih, Tensor? mask_hh, Tensor y, Tensor cs, Tensor gates, "
      "bool input_grad=True) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // One step of one layer whose W = [W_ih | W_hh] [4H, I+H] is CSR: x [B,I], h/c [B,H] float32, row_ptr
  // int32 [4H+1], col_idx uint8/int16/int32 [nnz], values float32/float16 [nnz], bias [4H] -> (h', c').
  m.def(
      "sparse_lstm_step(Tensor x, Tensor h, Tensor c, Tensor row_ptr, Tensor col_idx, Tensor values, "
      "Tensor bias) -> (Tensor, Tensor)");
  // T steps of G groups whose dense weights are read only at the entries of their layouts (int32, see
  // csrc/cpu/sparse_layout.h): x [T,G,B,I], h0/c0 [G,B,H] -> (y [T,G,B,H], c_n [G,B,H], and for the
  // backward: x_panels, h_panels, gates, cs in the kernel's own layouts, empty without save).
  m.def(
      "sparse_lstm_seq(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor bias, Tensor layout_ih, "
      "Tensor layout_hh, bool save=True) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias); weight gradients zero off the layouts;
  // grad_x empty [0] without input_grad.
  m.def(
      "sparse_lstm_seq_backward(Tensor grad_y, Tensor? grad_c_n, Tensor w_ih, Tensor w_hh, Tensor layout_ih, "
      "Tensor layout_hh, Tensor x_panels, Tensor h_panels, Tensor gates, Tensor cs, bool input_grad=True) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // G linear layers whose weights [G,R,K] are read only at the layout's entries: x [L,G,B,K] -> [L,G,B,R].
  m.def("sparse_linear(Tensor x, Tensor weight, Tensor bias, Tensor layout) -> Tensor");
  // -> (grad_x, grad_weight, grad_bias).
  m.def("sparse_linear_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor layout) -> (Tensor, Tensor, Tensor)");
}
