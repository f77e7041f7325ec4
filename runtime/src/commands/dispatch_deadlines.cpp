#include "dispatch_deadlines.hpp"

#include <atomic>
#include <utility>
#include <vector>

namespace sourcery::detail {

struct dispatch_deadlines::entry {
  clock::time_point due;
  std::function<void()> on_expiry;
  std::atomic<bool> settled{false};
  bool linked = false; // in a bucket (guarded by the owner's mutex)
  bucket* in = nullptr;
  bucket::iterator where;
};

dispatch_deadlines::dispatch_deadlines() : thread_([this] { run(); }) {}

dispatch_deadlines::~dispatch_deadlines() {
  {
    std::lock_guard guard{mtx_};
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

dispatch_deadlines::ticket dispatch_deadlines::add(clock::time_point start, std::chrono::milliseconds timeout,
                                                  std::function<void()> on_expiry) {
  auto t = std::make_shared<entry>();
  t->on_expiry = std::move(on_expiry);
  t->due = due(start, timeout);
  if (t->due == clock::time_point::max())
    return t; // never expires
  bool earlier;
  {
    std::lock_guard guard{mtx_};
    auto& b = buckets_[timeout];
    earlier = b.empty(); // a new front: maybe the earliest deadline now
    t->where = b.insert(b.end(), t);
    t->in = &b;
    t->linked = true;
  }
  if (earlier)
    cv_.notify_one();
  return t;
}

bool dispatch_deadlines::settle(const ticket& t) {
  if (t->settled.exchange(true))
    return false;
  std::function<void()> unused; // destroyed outside the lock: it may own anything
  std::lock_guard guard{mtx_};
  if (t->linked) {
    t->in->erase(t->where);
    t->linked = false;
  }
  unused = std::move(t->on_expiry);
  return true;
}

void dispatch_deadlines::run() {
  std::unique_lock guard{mtx_};
  std::vector<ticket> fired;
  while (!stopping_) {
    auto now = clock::now();
    auto next = clock::time_point::max();
    for (auto& [timeout, b] : buckets_) {
      while (!b.empty() && b.front()->due <= now) {
        b.front()->linked = false;
        fired.push_back(std::move(b.front()));
        b.pop_front();
      }
      if (!b.empty())
        next = std::min(next, b.front()->due);
    }
    if (!fired.empty()) {
      guard.unlock();
      for (auto& t : fired)
        if (!t->settled.exchange(true) && t->on_expiry)
          std::exchange(t->on_expiry, nullptr)();
      fired.clear();
      guard.lock();
      continue;
    }
    if (next == clock::time_point::max())
      cv_.wait(guard);
    else
      cv_.wait_until(guard, next);
  }
}

} // namespace sourcery::detail
