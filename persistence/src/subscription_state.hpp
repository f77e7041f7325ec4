#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/subscription.hpp"

namespace sourcery::persistence::detail {

/// The shared state of a subscription: its thread reads `$all` from the last
/// acknowledged position (catch-up) and, at the end of the log, waits for new
/// commits (live). One engine for every store implementation.
struct subscription_state : std::enable_shared_from_this<subscription_state> {
  subscription_state(event_store& store, subscription_options options, batch_handler handler,
                     uint64_t start);
  ~subscription_state();

  /// Blocks until the store's head reaches `pos`, `deadline` passes or
  /// `cancel` is set. Polls storage now and then for appends made by other
  /// processes.
  static bool wait_for_position(const event_store& store, uint64_t pos,
                                std::chrono::steady_clock::time_point deadline,
                                const std::atomic<bool>& cancel);

  void start();
  void stop();
  void run();
  void finish(caf::error err);

  event_store& store;
  subscription_options options;
  batch_handler handler;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<bool> active{true};
  std::atomic<uint64_t> position{0};
  mutable std::mutex mtx;
  mutable std::condition_variable cv;
  caf::error failure;
};

} // namespace sourcery::persistence::detail
