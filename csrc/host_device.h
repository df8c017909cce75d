// HAPRUNED_HOST_DEVICE marks a function that both host code and CUDA device code call (and that the
// C++ compilers inline).
#pragma once

#ifdef __CUDACC__
#define HAPRUNED_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HAPRUNED_HOST_DEVICE inline __attribute__((always_inline))
#endif
