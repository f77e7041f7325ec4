#pragma once

// The deadlines of dispatches in flight: each dispatch is answered within its
// timeout, whoever comes first — the aggregate's answer or the deadline.
// One thread waits for the earliest deadline. Entries are kept in one list
// per timeout value, so each list is ordered by deadline (appended in time
// order) and adding, settling and expiring are O(1) — no heap of millions of
// entries at full dispatch rate.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace sourcery::detail {

class dispatch_deadlines {
public:
  using clock = std::chrono::steady_clock;
  struct entry;
  using ticket = std::shared_ptr<entry>;

  dispatch_deadlines();
  /// Stops the thread; deadlines not reached are dropped unfired.
  ~dispatch_deadlines();
  dispatch_deadlines(const dispatch_deadlines&) = delete;
  dispatch_deadlines& operator=(const dispatch_deadlines&) = delete;

  /// When a dispatch begun at `start` with `timeout` is due: max for a
  /// timeout past a year (none), which also keeps the sum from overflowing.
  static clock::time_point due(clock::time_point start, std::chrono::milliseconds timeout) {
    return timeout > std::chrono::hours{24 * 365} ? clock::time_point::max()
                                                  : start + std::max(timeout, std::chrono::milliseconds{0});
  }

  /// `on_expiry` runs on this object's thread at `due(start, timeout)`,
  /// unless `settle` came first.
  ticket add(clock::time_point start, std::chrono::milliseconds timeout, std::function<void()> on_expiry);

  /// The answer came: true if it is in time (the expiry will not run),
  /// false if the deadline fired first (drop the late answer).
  bool settle(const ticket& t);

private:
  using bucket = std::list<ticket>;
  void run();

  std::mutex mtx_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::chrono::milliseconds, bucket> buckets_;
  std::thread thread_;
};

} // namespace sourcery::detail
