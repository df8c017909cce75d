// Parallel loops of the CPU kernels, for machines that other processes share.
//
// An OpenMP region (at::parallel_for) splits the work statically and joins at a barrier: when
// another process holds the core of one of its threads, the whole call waits a scheduler time
// slice (milliseconds) for that thread. Here the calling thread and the pool's helpers claim
// chunks from a shared counter instead, so a helper that is not running takes no work, and the
// caller waits only for chunks a helper has started. Work below a grain runs on the calling thread.
#pragma once
#include <c10/util/FunctionRef.h>

#include <algorithm>
#include <cstdint>

namespace hapruned {

// The least work (multiply-adds, or element updates) worth handing to another thread: about
// 10-20 microseconds, well above the cost of waking a helper and of claiming chunks.
constexpr int64_t kMinChunkWork = int64_t(1) << 16;

// Items per chunk so that each chunk holds at least kMinChunkWork (work_per_item: the cost of one item).
inline int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kMinChunkWork / std::max<int64_t>(1, work_per_item));
}

// Runs body(b, e) on disjoint ranges covering [begin, end), each at least `grain` items (but the
// last), on up to at::get_num_threads() threads. Runs on the calling thread when there is at most
// one grain of work, a single thread, or when called from inside a parallel region. An exception
// thrown by body is rethrown here after every started chunk has finished.
void parallel_for(int64_t begin, int64_t end, int64_t grain, c10::function_ref<void(int64_t, int64_t)> body);

}  // namespace hapruned
