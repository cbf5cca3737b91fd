// The thread pool of our CPU quantized product (cpu_qmm.cpp).

#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "qmm_internal.hpp"

namespace mlx_sys_qmm {

// A persistent pool: `run(n, fn)` calls fn(0..n-1) on the caller and the
// workers. Waking a sleeping worker costs tens of microseconds (far more on
// a loaded machine), about what a small product takes on one core, so
// after a few-row product (decode's, which come one after another) the
// workers wait awake for the next job for a while before they sleep.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) {
      std::thread([this] { worker(); }).detach();
    }
    workers_ = workers;
  }

  int size() const {
    return workers_ + 1;
  }

  // `spin_us`: how long the workers then wait awake for the next job
  // before they sleep (see kDecodeSpinUs).
  void run(int tasks, const std::function<void(int)>& fn, int spin_us = 0) {
    if (workers_ == 0 || tasks <= 1) {
      for (int i = 0; i < tasks; ++i) {
        fn(i);
      }
      return;
    }
    std::lock_guard<std::mutex> one_job(job_mu_);
    fn_ = &fn;
    tasks_ = tasks;
    spin_us_.store(spin_us, std::memory_order_relaxed);
    next_.store(0, std::memory_order_relaxed);
    pending_.store(workers_, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work();
    // Spin briefly, then let a worker that has not run yet have the core.
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < 2000) {
        pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static void pause() {
#if QMM_X86
    _mm_pause();
#else
    std::this_thread::yield();
#endif
  }

  void work() {
    int i;
    while ((i = next_.fetch_add(1, std::memory_order_relaxed)) < tasks_) {
      (*fn_)(i);
    }
  }

  void worker() {
    // Generation 0 is the pool's start: a job posted before this thread
    // first runs is still seen as new.
    uint64_t seen = 0;
    int spin_us = 0;
    for (;;) {
      if (spin_us > 0) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
        while (gen_.load(std::memory_order_acquire) == seen) {
          for (int i = 0; i < 16; ++i) pause();
          if (std::chrono::steady_clock::now() > until) break;
        }
      }
      if (gen_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return gen_.load(std::memory_order_acquire) != seen;
        });
      }
      seen = gen_.load(std::memory_order_acquire);
      spin_us = spin_us_.load(std::memory_order_relaxed);
      work();
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  int workers_ = 0;
  std::mutex job_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> next_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> spin_us_{0};
  const std::function<void(int)>* fn_ = nullptr;
  int tasks_ = 0;
};

// How long the workers wait awake after a decode step's job (a few-row
// product, one-query attention) for the next (BENCHMARKS.md, "CPU decode
// threads").
constexpr int kDecodeSpinUs = 2000;

// The process's pool: one thread per core (at most 16), the caller included.
Pool& pool();

}  // namespace mlx_sys_qmm
