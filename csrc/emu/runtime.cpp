// The emulated CUDA device's scheduler (see runtime.h): fibers, blocks, warps and launches.
#include "runtime.h"

#include <c10/util/Exception.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if !defined(__x86_64__) || !defined(__linux__)
#error "the emulated CUDA device switches fibers with x86-64 System V code (Linux)"
#endif

// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the
// stack pointer in *from, then restores the same from the stack `to` and returns there. A new fiber's
// stack is laid out as if it had called this function (Fiber::start).
extern "C" void hapruned_emu_switch(void** from, void* to);
asm(R"(
  .text
  .p2align 4
  .type hapruned_emu_switch, @function
hapruned_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size hapruned_emu_switch, .-hapruned_emu_switch
  .section .note.GNU-stack, "", @progbits
  .text
)");

namespace hapruned::emu {

thread_local const ThreadView* running = nullptr;

namespace {

constexpr int kWorkers = 2;                    // worker threads per launch: blocks run in parallel
constexpr int kResident = 4;                   // blocks interleaved on one worker
constexpr size_t kStackBytes = 64 * 1024;      // per CUDA thread, a guard page below it
constexpr unsigned char kSharedPoison = 0xA5;  // fills shared memory: an unwritten read shows
constexpr unsigned kMaxWarps = kMaxThreads / kWarpSize;

enum class State : uint8_t { kRunnable, kBarrier, kWarp, kDone };

struct Block;

struct Warp {
  unsigned alive = 0;     // lanes that exist and have not exited
  unsigned runnable = 0;  // lanes ready to run
  unsigned mask = 0;      // the pending warp-synchronous call's mask (0: none pending)
  unsigned waiting = 0;   // the lanes of `mask` that reached it
  WarpOp op{};
  int width = 0;
  uint64_t values[kWarpSize];
  unsigned args[kWarpSize];
};

struct Fiber {
  void* sp = nullptr;
  char* stack_top = nullptr;
  ThreadView view{};
  Block* block = nullptr;
  State state = State::kDone;
  uint64_t result = 0;  // of its last warp-synchronous call

  unsigned lane() const { return view.thread_idx.x % kWarpSize; }
  unsigned bit() const { return 1u << lane(); }
  Warp& warp() const;
};

struct Block {
  bool active = false;
  unsigned threads = 0, live = 0, runnable = 0, at_barrier = 0;
  Fiber* fibers = nullptr;
  Warp warps[kMaxWarps];
  size_t shared_used = 0;
  std::vector<std::pair<const void*, size_t>> shared_sites;  // declaration -> offset
  alignas(64) unsigned char shared[kSharedBytes];
};

Warp& Fiber::warp() const { return block->warps[view.thread_idx.x / kWarpSize]; }

struct Launch {
  unsigned blocks, threads;
  void (*body)(void*);
  void* context;
  uint64_t seed;
  std::atomic<unsigned> next_block{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::string error;

  void record_failure(std::string message) {
    const std::lock_guard<std::mutex> lock(error_mutex);
    if (!failed.exchange(true)) error = std::move(message);
  }
};

// Fiber stacks, each with a guard page below it; kept from launch to launch.
class Stacks {
 public:
  Stacks() = default;
  Stacks(const Stacks&) = delete;
  Stacks& operator=(const Stacks&) = delete;
  ~Stacks() { release(); }

  void reserve(size_t count) {
    if (count <= count_) return;
    release();
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    stride_ = kStackBytes + page;
    void* memory = mmap(nullptr, count * stride_, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    TORCH_CHECK(memory != MAP_FAILED, "emulated CUDA device: cannot map ", count, " fiber stacks");
    base_ = static_cast<char*>(memory);
    count_ = count;
    for (size_t i = 0; i < count; ++i) {
      TORCH_CHECK(mprotect(base_ + i * stride_, page, PROT_NONE) == 0, "emulated CUDA device: no guard page");
    }
  }

  char* top(size_t i) const { return base_ + (i + 1) * stride_; }

 private:
  void release() {
    if (base_ != nullptr) munmap(base_, count_ * stride_);
    base_ = nullptr;
    count_ = 0;
  }

  char* base_ = nullptr;
  size_t count_ = 0, stride_ = 0;
};

[[noreturn]] void fiber_main();

// One worker thread's share of a launch: kResident blocks and their fibers. Workers are pooled.
struct Worker {
  Launch* launch = nullptr;
  std::unique_ptr<Block[]> blocks = std::make_unique<Block[]>(kResident);
  std::vector<Fiber> fibers;
  Stacks stacks;
  void* scheduler_sp = nullptr;
  Fiber* current = nullptr;
  uint64_t rng = 0;

  void prepare(Launch& l, int id) {
    launch = &l;
    rng = (l.seed + 1) * 0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(id);
    fibers.resize(static_cast<size_t>(kResident) * l.threads);
    stacks.reserve(fibers.size());
    for (size_t i = 0; i < fibers.size(); ++i) fibers[i].stack_top = stacks.top(i);
    for (int r = 0; r < kResident; ++r) blocks[r].active = false;
  }

  unsigned random(unsigned n) {  // xorshift64*
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return static_cast<unsigned>(((rng * 0x2545F4914F6CDD1Dull) >> 32) % n);
  }

  void start_block(int slot, unsigned index) {
    Block& b = blocks[slot];
    const unsigned threads = launch->threads;
    b.active = true;
    b.threads = b.live = b.runnable = threads;
    b.at_barrier = 0;
    b.fibers = fibers.data() + static_cast<size_t>(slot) * threads;
    b.shared_used = 0;
    b.shared_sites.clear();
    for (unsigned w = 0; w * kWarpSize < threads; ++w) {
      const unsigned lanes = std::min<unsigned>(kWarpSize, threads - w * kWarpSize);
      b.warps[w] = Warp{};
      b.warps[w].alive = b.warps[w].runnable = lanes == kWarpSize ? ~0u : (1u << lanes) - 1;
    }
    for (unsigned t = 0; t < threads; ++t) {
      Fiber& f = b.fibers[t];
      f.view = {{t, 0, 0}, {index, 0, 0}, {threads, 1, 1}, {launch->blocks, 1, 1}};
      f.block = &b;
      f.state = State::kRunnable;
      // The frame hapruned_emu_switch pops: MXCSR and x87 control word at their defaults, six zero
      // registers, then fiber_main as the return address, above it a null one (fiber_main never returns).
      auto* sp = reinterpret_cast<uint64_t*>(f.stack_top);
      *--sp = 0;
      *--sp = reinterpret_cast<uint64_t>(&fiber_main);
      for (int r = 0; r < 6; ++r) *--sp = 0;
      *--sp = uint64_t(0x037F) << 32 | 0x1F80;
      f.sp = sp;
    }
  }

  void resume(Fiber& f) {
    current = &f;
    running = &f.view;
    hapruned_emu_switch(&scheduler_sp, f.sp);
    current = nullptr;
    running = nullptr;
  }

  void suspend(Fiber& f) { hapruned_emu_switch(&f.sp, scheduler_sp); }

  // Runs the launch's blocks until none is left (or one failed).
  void run() {
    for (;;) {
      if (launch->failed.load(std::memory_order_relaxed)) return;
      bool any_active = false;
      for (int r = 0; r < kResident; ++r) {
        if (!blocks[r].active) {
          const unsigned index = launch->next_block.fetch_add(1, std::memory_order_relaxed);
          if (index < launch->blocks) start_block(r, index);
        }
        any_active |= blocks[r].active;
      }
      if (!any_active) return;
      step();
    }
  }

  // Picks a block and a warp with runnable threads at random and runs each of those threads once,
  // from a random lane on.
  void step() {
    const int first = static_cast<int>(random(kResident));
    Block* block = nullptr;
    for (int k = 0; k < kResident && block == nullptr; ++k) {
      Block& b = blocks[(first + k) % kResident];
      if (b.active && b.runnable > 0) block = &b;
    }
    if (block == nullptr) {  // every resident block waits for something that no thread will do
      for (int r = 0; r < kResident; ++r) {
        if (blocks[r].active) return report_deadlock(blocks[r]);
      }
      return;
    }
    const unsigned warps = (block->threads + kWarpSize - 1) / kWarpSize;
    const unsigned first_warp = random(warps);
    Warp* warp = nullptr;
    unsigned w = 0;
    for (unsigned k = 0; k < warps && warp == nullptr; ++k) {
      w = (first_warp + k) % warps;
      if (block->warps[w].runnable != 0) warp = &block->warps[w];
    }
    const unsigned lanes = warp->runnable, first_lane = random(kWarpSize);
    for (unsigned k = 0; k < kWarpSize; ++k) {
      const unsigned lane = (first_lane + k) % kWarpSize;
      if (!(lanes >> lane & 1)) continue;
      if (launch->failed.load(std::memory_order_relaxed)) return;
      resume(block->fibers[w * kWarpSize + lane]);
    }
    if (block->live == 0) block->active = false;
  }

  void report_deadlock(const Block& b) {
    unsigned barrier = 0, warp = 0;
    for (unsigned t = 0; t < b.threads; ++t) {
      barrier += b.fibers[t].state == State::kBarrier;
      warp += b.fibers[t].state == State::kWarp;
    }
    launch->record_failure("deadlock in block " + std::to_string(b.fibers[0].view.block_idx.x) + ": " +
                           std::to_string(barrier) + " threads wait at __syncthreads, " + std::to_string(warp) +
                           " at warp-synchronous calls, and no thread can run");
  }
};

thread_local Worker* worker = nullptr;

std::mutex pool_mutex;
std::vector<std::unique_ptr<Worker>> pool;
std::atomic<uint64_t> launches{0};

Fiber& this_fiber() {
  TORCH_INTERNAL_ASSERT(worker != nullptr && worker->current != nullptr,
                        "a CUDA device function was called outside an emulated kernel launch");
  return *worker->current;
}

void make_runnable(Fiber& f) {
  f.state = State::kRunnable;
  f.warp().runnable |= f.bit();
  ++f.block->runnable;
}

void make_waiting(Fiber& f, State state) {
  f.state = state;
  f.warp().runnable &= ~f.bit();
  --f.block->runnable;
}

void release_barrier(Block& b) {
  for (unsigned t = 0; t < b.threads; ++t) {
    if (b.fibers[t].state == State::kBarrier) make_runnable(b.fibers[t]);
  }
  b.at_barrier = 0;
}

// Hands every lane of the warp's pending call its result.
void complete(Warp& warp, Fiber* lanes) {
  const unsigned mask = warp.mask;
  for (unsigned lane = 0; lane < kWarpSize; ++lane) {
    if (!(mask >> lane & 1)) continue;
    const uint64_t own = warp.values[lane];
    const unsigned segment = lane - lane % warp.width, arg = warp.args[lane];
    auto from = [&](unsigned source) {  // a lane outside the mask gives an undefined value
      return mask >> source & 1 ? warp.values[source] : 0xA5A5A5A5A5A5A5A5ull;
    };
    uint64_t result = 0;
    switch (warp.op) {
      case WarpOp::kShuffleUp:
        result = lane - segment >= arg ? from(lane - arg) : own;
        break;
      case WarpOp::kShuffleDown:
        result = lane - segment + arg < static_cast<unsigned>(warp.width) ? from(lane + arg) : own;
        break;
      case WarpOp::kBallot:
        for (unsigned j = 0; j < kWarpSize; ++j) result |= uint64_t(mask >> j & 1 && warp.values[j] != 0) << j;
        break;
      case WarpOp::kMatchAny:
        for (unsigned j = 0; j < kWarpSize; ++j) result |= uint64_t(mask >> j & 1 && warp.values[j] == own) << j;
        break;
    }
    lanes[lane].result = result;
    make_runnable(lanes[lane]);
  }
  warp.mask = warp.waiting = 0;
}

std::string where(const Fiber& f) {
  return "block " + std::to_string(f.view.block_idx.x) + ", thread " + std::to_string(f.view.thread_idx.x);
}

[[noreturn]] void finish(Fiber& f) {
  Block& b = *f.block;
  Warp& warp = f.warp();
  make_waiting(f, State::kDone);
  --b.live;
  warp.alive &= ~f.bit();
  if (warp.mask & f.bit()) {
    fail("a thread exited while its warp waits for it at a warp-synchronous call", __FILE__, __LINE__);
  }
  if (b.at_barrier > 0 && b.at_barrier == b.live) release_barrier(b);
  worker->suspend(f);
  __builtin_unreachable();
}

void fiber_main() {
  Fiber& f = this_fiber();
  std::string error;
  try {
    worker->launch->body(worker->launch->context);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) fail(error.c_str(), __FILE__, __LINE__);
  finish(f);
}

void run_worker(Launch& l, int id) {
  std::unique_ptr<Worker> w;
  {
    const std::lock_guard<std::mutex> lock(pool_mutex);
    if (!pool.empty()) {
      w = std::move(pool.back());
      pool.pop_back();
    }
  }
  try {
    if (!w) w = std::make_unique<Worker>();
    w->prepare(l, id);
    worker = w.get();
    w->run();
  } catch (const std::exception& e) {
    l.record_failure(e.what());
  }
  worker = nullptr;
  const std::lock_guard<std::mutex> lock(pool_mutex);
  if (w) pool.push_back(std::move(w));
}

}  // namespace

void launch(unsigned blocks, unsigned threads, void (*body)(void*), void* context) {
  TORCH_CHECK(threads >= 1 && threads <= kMaxThreads, "a block has 1 to ", kMaxThreads, " threads, got ", threads);
  TORCH_CHECK(worker == nullptr, "an emulated kernel cannot launch another");
  if (blocks == 0) return;
  Launch l{blocks, threads, body, context, launches.fetch_add(1)};
  std::vector<std::thread> helpers;
  for (int id = 1; id < kWorkers && static_cast<unsigned>(id) < blocks; ++id) {
    try {
      helpers.emplace_back([&l, id] { run_worker(l, id); });
    } catch (const std::system_error&) {  // no thread to be had: the workers there are take every block
      break;
    }
  }
  run_worker(l, 0);
  for (std::thread& helper : helpers) helper.join();
  TORCH_CHECK(!l.failed, "emulated CUDA kernel failed: ", l.error);
}

void sync_threads() {
  Fiber& f = this_fiber();
  Block& b = *f.block;
  make_waiting(f, State::kBarrier);
  if (++b.at_barrier == b.live) release_barrier(b);
  worker->suspend(f);
}

void thread_fence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  yield();
}

void yield() {
  Fiber& f = this_fiber();
  worker->suspend(f);
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, unsigned arg, int width) {
  Fiber& f = this_fiber();
  Warp& warp = f.warp();
  if (!(mask & f.bit())) fail("a warp-synchronous call's mask leaves out the calling lane", __FILE__, __LINE__);
  if (mask & ~warp.alive) {
    fail("a warp-synchronous call's mask names a lane that exited or does not exist", __FILE__, __LINE__);
  }
  if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0) {
    fail("a shuffle's width must be a power of 2 up to 32", __FILE__, __LINE__);
  }
  if (warp.mask == 0) {
    warp.mask = mask;
    warp.op = op;
    warp.width = width;
  } else if (warp.mask != mask || warp.op != op || warp.width != width) {
    fail("the lanes of a warp reached different warp-synchronous calls (or masks)", __FILE__, __LINE__);
  }
  warp.values[f.lane()] = value;
  warp.args[f.lane()] = arg;
  warp.waiting |= f.bit();
  make_waiting(f, State::kWarp);
  if (warp.waiting == warp.mask) complete(warp, f.block->fibers + (f.view.thread_idx.x - f.lane()));
  worker->suspend(f);
  return f.result;
}

void* shared(const void* site, size_t bytes, size_t align) {
  Block& b = *this_fiber().block;
  for (const auto& [declared, offset] : b.shared_sites) {
    if (declared == site) return b.shared + offset;
  }
  const size_t offset = (b.shared_used + align - 1) / align * align;
  if (offset + bytes > kSharedBytes) fail("the block's shared memory exceeds 48 KiB", __FILE__, __LINE__);
  b.shared_sites.emplace_back(site, offset);
  b.shared_used = offset + bytes;
  std::memset(b.shared + offset, kSharedPoison, bytes);
  return b.shared + offset;
}

void fail(const char* what, const char* file, int line) {
  Fiber& f = this_fiber();
  {
    const char* name = std::strrchr(file, '/');
    worker->launch->record_failure(std::string(what) + " (" + where(f) + ", " + (name ? name + 1 : file) + ":" +
                                   std::to_string(line) + ")");
  }
  if (f.state == State::kRunnable) make_waiting(f, State::kDone);
  worker->suspend(f);
  __builtin_unreachable();
}

}  // namespace hapruned::emu
