#pragma once

#include <chrono>
#include <thread>

namespace sourcery::testing {

/// Waits until `ok()` holds, checking every 20 ms, for at most `limit`;
/// whether it holds at the end. Tests wait on conditions with deadlines,
/// never a fixed sleep.
template <class F>
bool eventually(F ok, std::chrono::milliseconds limit = std::chrono::seconds{15}) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!ok()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return ok();
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return true;
}

} // namespace sourcery::testing
