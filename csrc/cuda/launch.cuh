// What the CUDA kernels' source needs beyond CUDA C++ itself, in both builds of it: the CUDA build
// (csrc/cuda/*.cu, nvcc) and the emulated one (csrc/emu/kernels.cpp, HAPRUNED_EMULATED: the same
// kernels run on the CPU, on CPU tensors; docs/cuda.md). The kernels live in the .cuh files beside this
// one; their launches, their shared memory and the device their tensors live on go through here.
#pragma once
#include <ATen/ATen.h>

#ifdef HAPRUNED_EMULATED
#include "../emu/cuda.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

// `HAPRUNED_SHARED(unsigned[n], name);` declares the block's shared array `name` (shared memory).
#ifdef HAPRUNED_EMULATED
#define HAPRUNED_SHARED(type, name) HAPRUNED_EMU_SHARED(type, name)
#else
#define HAPRUNED_SHARED(type, name) __shared__ std::type_identity_t<type> name
#endif

// HAPRUNED_FAULT(n) is true in the emulated build of tools/inject_faults.py while fault n is injected
// (a kernel bug that the emulated tests must catch), and false in every other build.
#ifdef HAPRUNED_FAULT_INJECTION
#ifndef HAPRUNED_EMULATED
#error "faults are injected into the emulated build only"
#endif
namespace hapruned {
extern const int injected_fault;
}
#define HAPRUNED_FAULT(n) (::hapruned::injected_fault == (n))
#else
#define HAPRUNED_FAULT(n) false
#endif

namespace hapruned {
namespace cuda {

constexpr int kThreads = 256;  // threads per block of every kernel here

// The tensors of the CUDA kernels: on the GPU, or in host memory for the emulated device.
#ifdef HAPRUNED_EMULATED
constexpr c10::DeviceType kDeviceType = c10::DeviceType::CPU;
#else
constexpr c10::DeviceType kDeviceType = c10::DeviceType::CUDA;
#endif

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for an elementwise kernel over n items with a grid-stride loop (the cap keeps the grid
// legal for any n; the loop covers the rest).
inline unsigned elementwise_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(n, kThreads), int64_t(1) << 20));
}

// Runs kernel(args...) on `blocks` blocks of kThreads threads, on the current stream (the emulated
// device: before returning), and checks the launch.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), int64_t blocks, const Args&... args) {
  TORCH_CHECK(blocks >= 1 && blocks <= std::numeric_limits<int>::max(), "a launch takes 1 to 2^31 - 1 blocks, got ",
              blocks);
#ifdef HAPRUNED_EMULATED
  auto body = [&] { kernel(args...); };
  emu::launch(static_cast<unsigned>(blocks), kThreads, body);
#else
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

}  // namespace cuda
}  // namespace hapruned
