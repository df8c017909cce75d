// The instruction sets of the CPU kernels, picked at run time.
//
// Every SIMD kernel is written once, as an always-inline template on an Isa tag (its vector width),
// and called through with_isa, which runs it inside one of three functions compiled for an
// instruction set: AVX-512 (x86-64-v4, 64-byte vectors), AVX2 + FMA (x86-64-v3, 32-byte vectors)
// or the baseline x86-64 (32-byte GCC vectors lowered to SSE2 pairs). The kernel's body is
// inlined into each, so it is compiled three times, and only these functions (nothing from a
// shared header) carry the wider instructions. The path is the widest the CPU has unless
// set_cpu_isa chose another (the tests run every path the CPU has; hapruned.ops.set_cpu_isa and the
// HAPRUNED_CPU_ISA environment variable set it from Python).
#pragma once
#include <cstdint>

namespace hapruned {

enum class CpuIsa : int32_t { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The Isa tags: kBytes is the width of the kernels' GCC vectors.
struct IsaBaseline {
  static constexpr int64_t kBytes = 32;
};
struct IsaAvx2 {
  static constexpr int64_t kBytes = 32;
};
struct IsaAvx512 {
  static constexpr int64_t kBytes = 64;
};

const char* isa_name(CpuIsa isa);
bool cpu_supports(CpuIsa isa);
CpuIsa widest_supported_isa();
CpuIsa current_isa();        // the path with_isa takes
bool set_cpu_isa(CpuIsa isa);  // false (and nothing changed) when the CPU lacks it

// The lambda given to with_isa: [&](auto isa) HAPRUNED_ISA_BODY { kernel<decltype(isa)>(...); }.
// Always inlined into the instruction set's function, so that it is compiled for it.
#define HAPRUNED_ISA_BODY __attribute__((always_inline))

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define HAPRUNED_MULTI_ISA 1
template <typename Body>
__attribute__((target("arch=x86-64-v4"))) void run_avx512(const Body& body) {
  body(IsaAvx512{});
}
template <typename Body>
__attribute__((target("arch=x86-64-v3"))) void run_avx2(const Body& body) {
  body(IsaAvx2{});
}
#endif

template <typename Body>
void run_baseline(const Body& body) {
  body(IsaBaseline{});
}

// Runs body(isa) compiled for the current instruction set.
template <typename Body>
void with_isa(const Body& body) {
#ifdef HAPRUNED_MULTI_ISA
  switch (current_isa()) {
    case CpuIsa::kAvx512: return run_avx512(body);
    case CpuIsa::kAvx2: return run_avx2(body);
    case CpuIsa::kBaseline: break;
  }
#endif
  run_baseline(body);
}

}  // namespace hapruned
