// The CPU's instruction sets and the path the kernels take (see isa.h).
#include "isa.h"

#include <atomic>

namespace hapruned {
namespace {

bool detect(CpuIsa isa) {
  if (isa == CpuIsa::kBaseline) return true;
#ifdef HAPRUNED_MULTI_ISA
  __builtin_cpu_init();
  // The x86-64-v3 and v4 levels, feature by feature (what the compiler may use under those arch names).
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
                  __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c") &&
                  __builtin_cpu_supports("movbe") && __builtin_cpu_supports("popcnt");
  if (isa == CpuIsa::kAvx2) return v3;
  return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

std::atomic<CpuIsa>& active() {
  static std::atomic<CpuIsa> isa{widest_supported_isa()};
  return isa;
}

}  // namespace

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kBaseline: break;
  }
  return "baseline";
}

bool cpu_supports(CpuIsa isa) {
  static const bool supported[3] = {detect(CpuIsa::kBaseline), detect(CpuIsa::kAvx2), detect(CpuIsa::kAvx512)};
  return supported[static_cast<int32_t>(isa)];
}

CpuIsa widest_supported_isa() {
  for (CpuIsa isa : {CpuIsa::kAvx512, CpuIsa::kAvx2})
    if (cpu_supports(isa)) return isa;
  return CpuIsa::kBaseline;
}

CpuIsa current_isa() { return active().load(std::memory_order_relaxed); }

bool set_cpu_isa(CpuIsa isa) {
  if (!cpu_supports(isa)) return false;
  active().store(isa, std::memory_order_relaxed);
  return true;
}

}  // namespace hapruned
