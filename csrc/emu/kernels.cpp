// hapruned._C_emu, the emulated CUDA device (docs/cuda.md): the CUDA backend of the ops, from the very
// source that the CUDA build compiles (csrc/cuda/*.cuh), host code and kernels, built to run on the
// CPU. Its kernels are registered for CPU tensors under torch.ops.hapruned_emu (schemas from
// hapruned/ops/emulated.py, which also puts them in place of the CPU kernels on request).
#define HAPRUNED_EMULATED

#include <Python.h>
#include <torch/library.h>

#include <cstdlib>

#include "../cuda/lstm.cuh"
#include "../cuda/prune_mask.cuh"

extern "C" {
// An empty module: importing hapruned._C_emu loads this library, which runs the registrations below.
PyObject* PyInit__C_emu(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_emu", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

#ifdef HAPRUNED_FAULT_INJECTION
// The fault to inject (HAPRUNED_FAULT=n; 0: none), for tools/inject_faults.py.
const int hapruned::injected_fault = [] {
  const char* fault = std::getenv("HAPRUNED_FAULT");
  return fault == nullptr ? 0 : std::atoi(fault);
}();
#endif

TORCH_LIBRARY_IMPL(hapruned_emu, CPU, m) {
  m.impl("magnitude_prune_mask", &hapruned::cuda::magnitude_prune_mask_cuda);
  hapruned::register_lstm_kernels<hapruned::cuda::CudaLstm>(m);
}
