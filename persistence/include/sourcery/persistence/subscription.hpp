#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "sourcery/persistence/event.hpp"

namespace sourcery::persistence {

class event_store;

namespace detail {
struct subscription_state;
} // namespace detail

/// Where a subscription begins when it has no checkpoint yet.
enum class subscription_start : uint8_t {
  origin,   ///< The first event of `$all`.
  current,  ///< The end of `$all` at subscribe time: new events only.
  position, ///< Right after `subscription_options::start_position`.
};

struct subscription_options {
  /// Empty: a transient subscription (live only, nothing stored). Otherwise a
  /// persistent one: its checkpoint (the last acknowledged position) is saved
  /// under this name after every handled batch, and a later subscription of
  /// the same name resumes after it. Delivery is at-least-once.
  std::string name;
  /// Start of a persistent subscription without checkpoint. Transient
  /// subscriptions always start at `current`.
  subscription_start start = subscription_start::origin;
  uint64_t start_position = 0;
  /// Deliver only events of this stream (empty: every stream).
  std::string stream;
  /// Most events handed to the handler at once.
  size_t batch_size = 256;
};

/// Called on the subscription's own thread with events in `$all` order.
/// Returning an error stops the subscription without acknowledging the
/// batch, so a persistent subscription redelivers it when resubscribed.
using batch_handler = std::function<caf::expected<void>(const std::vector<recorded_event>&)>;

/// Handle of a running subscription; stops it when destroyed.
class subscription {
public:
  subscription() = default;
  explicit subscription(std::shared_ptr<detail::subscription_state> state);
  subscription(subscription&&) noexcept = default;
  subscription& operator=(subscription&&) noexcept;
  subscription(const subscription&) = delete;
  subscription& operator=(const subscription&) = delete;
  ~subscription();

  /// Stops delivery; returns after the handler has returned for the last
  /// time. Idempotent.
  void stop();

  /// False once stopped or failed.
  bool active() const noexcept;

  /// The last acknowledged global position (0 before the first).
  uint64_t position() const noexcept;

  /// Why the subscription ended on its own (handler or store error), if it did.
  caf::error failure() const;

  /// Blocks until `position()` reaches `pos`, the subscription ends, or the
  /// timeout passes. Returns whether `pos` was reached.
  bool wait_for(uint64_t pos, std::chrono::milliseconds timeout) const;

private:
  std::shared_ptr<detail::subscription_state> state_;
};

} // namespace sourcery::persistence
