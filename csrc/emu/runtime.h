// The emulated CUDA device: runs the device code of CUDA kernels on the CPU (docs/cuda.md).
//
// Every CUDA thread is a fiber with its own stack. A launch's blocks run on two worker threads, each
// interleaving several resident blocks; a CUDA thread gives up the CPU only at a synchronisation point
// (__syncthreads, a warp-synchronous intrinsic, __threadfence, an atomic), and the scheduler then
// picks a warp with runnable threads at random and runs each of its runnable threads to its next
// synchronisation point. So code that skips a barrier, a warp's vote or the arrival protocol between
// blocks sees other threads and blocks move in between, as on a GPU. Warps have 32 lanes with
// independent scheduling: a warp-synchronous intrinsic waits for every lane of its mask, and a lane
// outside the mask, a lane that exited, a mismatch between the lanes' calls, a deadlock or a failed
// device-side assert ends the launch with an error naming the block and thread.
//
// cuda.h spells this API with CUDA's names; the kernels include that, not this.
#pragma once
#include <cstddef>
#include <cstdint>

namespace hapruned::emu {

constexpr int kWarpSize = 32;
constexpr unsigned kMaxThreads = 1024;        // per block, as CUDA's
constexpr size_t kSharedBytes = 48 * 1024;    // static shared memory per block, as CUDA's

struct Dim3 {
  unsigned x, y, z;
};

// What the running CUDA thread sees (1-D blocks and grids).
struct ThreadView {
  Dim3 thread_idx, block_idx, block_dim, grid_dim;
};

// The running CUDA thread's view; set by the scheduler on the worker thread that runs it.
extern thread_local const ThreadView* running;

enum class WarpOp : uint8_t { kShuffleUp, kShuffleDown, kBallot, kMatchAny };

// Runs body(context) as every thread of `blocks` blocks of `threads` threads; returns once all have
// finished. Throws c10::Error if a thread failed (the first failure's message).
void launch(unsigned blocks, unsigned threads, void (*body)(void*), void* context);

template <typename F>
void launch(unsigned blocks, unsigned threads, F& body) {
  launch(blocks, threads, [](void* f) { (*static_cast<F*>(f))(); }, &body);
}

// Synchronisation points, called from a running CUDA thread.
void sync_threads();
void thread_fence();
void yield();  // before an atomic: other threads may run in between
// The lanes' values (at most 64 bits each) in, this lane's result out; arg is the shuffle's delta.
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, unsigned arg, int width);

// The block's instance of the shared variable declared at `site` (one per declaration).
void* shared(const void* site, size_t bytes, size_t align);

// Ends the launch with an error, from a running CUDA thread; never returns.
[[noreturn]] void fail(const char* what, const char* file, int line);

}  // namespace hapruned::emu
