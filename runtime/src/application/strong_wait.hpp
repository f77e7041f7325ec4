#pragma once

// A strong dispatch waiting for its handlers (application::complete_strong).

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sourcery/runtime/application.hpp"

namespace sourcery {

/// A strong dispatch waiting for its handlers: answered once, by the last
/// handler to get there, the first to fail, the deadline, or the stop.
struct application::strong_wait {
  std::mutex mtx;
  bool answered = false;
  size_t left = 0;
  std::chrono::steady_clock::time_point deadline;
  dispatch_result result;
  std::function<void(caf::expected<dispatch_result>)> done;
  std::vector<std::shared_ptr<handler_status>> handlers;

  void fail(const std::string& why) {
    std::function<void(caf::expected<dispatch_result>)> f;
    {
      std::lock_guard guard{mtx};
      if (answered)
        return;
      answered = true;
      f = std::move(done);
    }
    auto stored = "the events were stored (positions " + std::to_string(result.first_position) + ".."
                  + std::to_string(result.last_position) + ") but ";
    // A handler that cannot write (a full disk) is the cause to report: the
    // caller (HTTP: 507) learns what to fix, not only that it waited.
    for (auto& h : handlers)
      if (auto trouble = h->storage_trouble(); trouble && h->position() < result.last_position) {
        auto code = persistence::code_of(trouble);
        f(persistence::make_error(code == persistence::store_errc::none ? persistence::store_errc::io_error : code,
                                  stored + h->name() + " cannot store its progress: " + describe_error(trouble)));
        return;
      }
    f(make_error(dispatch_errc::consistency_timeout, stored + why));
  }

  void reached() {
    std::function<void(caf::expected<dispatch_result>)> f;
    {
      std::lock_guard guard{mtx};
      if (answered || --left > 0)
        return;
      answered = true;
      f = std::move(done);
    }
    f(std::move(result));
  }

  bool settled() {
    std::lock_guard guard{mtx};
    return answered;
  }
};

} // namespace sourcery
