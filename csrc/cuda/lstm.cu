// The CUDA build of the masked LSTM (lstm.cuh).
#include <torch/library.h>

#include "lstm.cuh"

TORCH_LIBRARY_IMPL(hapruned, CUDA, m) { hapruned::register_lstm_kernels<hapruned::cuda::CudaLstm>(m); }
