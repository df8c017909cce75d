// The work-sharing pool behind hapruned::parallel_for (see parallel.h).
//
// A call publishes a Job whose chunks are split into one contiguous share per thread, as a static
// OpenMP schedule splits them, so that repeated calls give each thread the same data (its cache).
// Each thread claims chunks of its own share with one atomic increment each, then claims what is left
// of the other shares. The caller (share 0) never waits for a helper to arrive, only for the chunks
// helpers have claimed, so a helper that another process keeps off its core costs nothing: its share
// is taken over. Helpers spin briefly after a job (back-to-back calls find them awake), then sleep on
// a condition variable, so an idle pool takes no CPU time from other processes.
#include "parallel.h"

#include <ATen/Parallel.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

namespace hapruned {
namespace {

// How long a helper looks for the next job, and the caller for the helpers' last chunks, before
// sleeping: a wake-up from sleep costs tens of microseconds on a virtual machine.
constexpr auto kSpin = std::chrono::microseconds(50);

void pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until ready() or kSpin has passed; returns ready().
template <typename Ready>
bool spin_until(const Ready& ready) {
  const auto give_up = std::chrono::steady_clock::now() + kSpin;
  while (!ready() && std::chrono::steady_clock::now() < give_up) {
    for (int i = 0; i < 16; ++i) pause();
  }
  return ready();
}

struct Job {
  c10::function_ref<void(int64_t, int64_t)> body;  // the caller's: only called for claimed chunks, which it waits for
  int64_t begin, end, chunk;
  int32_t chunks, threads;
  struct alignas(64) Share {  // a cache line each: a thread's claims do not evict the others' counters
    std::atomic<int32_t> next;  // the share's next unclaimed chunk
    int32_t end;
  };
  std::unique_ptr<Share[]> shares;
  std::atomic<int32_t> done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // the first exception a chunk threw

  Job(c10::function_ref<void(int64_t, int64_t)> body, int64_t begin, int64_t end, int64_t chunk, int32_t chunks,
      int32_t threads)
      : body(body), begin(begin), end(end), chunk(chunk), chunks(chunks), threads(threads), shares(new Share[threads]) {
    for (int32_t k = 0; k < threads; ++k) {
      shares[k].next.store(int32_t(int64_t(chunks) * k / threads), std::memory_order_relaxed);
      shares[k].end = int32_t(int64_t(chunks) * (k + 1) / threads);
    }
  }
};

thread_local bool inside_chunk = false;  // a parallel_for from inside a chunk runs on its thread

// Claims and runs the chunks of share `own`, then those left in the others, until none is left.
void run_chunks(Job& job, int32_t own) {
  inside_chunk = true;
  for (int32_t k = 0; k < job.threads; ++k) {
    Job::Share& share = job.shares[(own + k) % job.threads];
    for (int32_t c; (c = share.next.fetch_add(1, std::memory_order_relaxed)) < share.end;) {
      const int64_t b = job.begin + c * job.chunk;
      try {
        job.body(b, std::min(job.end, b + job.chunk));
      } catch (...) {
        if (!job.failed.exchange(true)) job.error = std::current_exception();
      }
      if (job.done.fetch_add(1, std::memory_order_acq_rel) + 1 == job.chunks) job.done.notify_all();
    }
  }
  inside_chunk = false;
}

class Pool {
 public:
  // Publishes job to its threads - 1 helpers (started on first need); helper i takes share i + 1.
  void publish(const std::shared_ptr<Job>& job) {
    bool sleepers;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (; workers_ < job->threads - 1; ++workers_) std::thread(&Pool::work, this, workers_, generation_.load()).detach();
      job_ = job;
      generation_.fetch_add(1, std::memory_order_release);
      sleepers = sleeping_ > 0;
    }
    if (sleepers) wake_.notify_all();
  }

 private:
  void work(int32_t index, uint64_t seen) {
    for (;;) {
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ++sleeping_;
        wake_.wait(lock, [&] { return generation_.load() != seen; });
        --sleeping_;
        seen = generation_.load();
        job = job_;
      }
      if (index + 1 < job->threads) run_chunks(*job, index + 1);
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::shared_ptr<Job> job_;  // the latest job
  std::atomic<uint64_t> generation_{0};
  int workers_ = 0, sleeping_ = 0;
};

Pool* pool = nullptr;

Pool& get_pool() {
  static std::once_flag once;
  std::call_once(once, [] {
    pool = new Pool();  // never destroyed: detached helpers may still use it at exit
    // A forked child has none of the helpers: it starts a pool of its own (the old one leaks).
    pthread_atfork(nullptr, nullptr, [] { pool = new Pool(); });
  });
  return *pool;
}

}  // namespace

void parallel_for(int64_t begin, int64_t end, int64_t grain, c10::function_ref<void(int64_t, int64_t)> body) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t most_chunks = (n + grain - 1) / grain;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), most_chunks);
  if (threads <= 1 || inside_chunk || at::in_parallel_region()) {
    body(begin, end);
    return;
  }
  // Several chunks per thread: a late or slow thread then leaves less for the others to wait on.
  const int64_t chunks = std::min<int64_t>(most_chunks, 8 * threads);
  const int64_t chunk = (n + chunks - 1) / chunks;
  const auto job = std::make_shared<Job>(body, begin, end, chunk, static_cast<int32_t>((n + chunk - 1) / chunk),
                                         static_cast<int32_t>(threads));
  get_pool().publish(job);
  run_chunks(*job, 0);
  spin_until([&] { return job->done.load(std::memory_order_acquire) == job->chunks; });
  for (int32_t done; (done = job->done.load(std::memory_order_acquire)) < job->chunks;) job->done.wait(done);
  if (job->failed.load()) std::rethrow_exception(job->error);
}

}  // namespace hapruned
