#pragma once

// The threads of a partitioned event handler, kept for the handler's life:
// creating and joining a thread per partition for every batch costs tens of
// microseconds each, on every batch.

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sourcery::detail {

class partition_pool {
public:
  /// `partitions - 1` threads: the caller runs partition 0 itself.
  explicit partition_pool(size_t partitions) {
    for (size_t p = 1; p < partitions; ++p)
      threads_.emplace_back([this, p] { work(p); });
  }

  ~partition_pool() {
    {
      std::lock_guard guard{mtx_};
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_)
      t.join();
  }

  partition_pool(const partition_pool&) = delete;
  partition_pool& operator=(const partition_pool&) = delete;

  /// Runs `job(p)` for every partition p, 0 on the calling thread; returns
  /// once all have returned. `job` must not throw.
  void run(const std::function<void(size_t)>& job) {
    {
      std::lock_guard guard{mtx_};
      job_ = &job;
      left_ = threads_.size();
      ++round_;
    }
    wake_.notify_all();
    job(0);
    std::unique_lock guard{mtx_};
    done_.wait(guard, [this] { return left_ == 0; });
    job_ = nullptr;
  }

private:
  void work(size_t p) {
    uint64_t seen = 0;
    std::unique_lock guard{mtx_};
    for (;;) {
      wake_.wait(guard, [&] { return stopping_ || round_ != seen; });
      if (stopping_)
        return;
      seen = round_;
      auto* job = job_;
      guard.unlock();
      (*job)(p);
      guard.lock();
      if (--left_ == 0)
        done_.notify_one();
    }
  }

  std::mutex mtx_;
  std::condition_variable wake_, done_;
  const std::function<void(size_t)>* job_ = nullptr;
  size_t left_ = 0;
  uint64_t round_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

} // namespace sourcery::detail
