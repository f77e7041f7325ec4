#pragma once

// Waiting for a handler, projection or process manager without polling:
// its status calls back when it reaches a position or stops.

#include <chrono>
#include <cstdint>
#include <future>
#include <limits>
#include <memory>

#include "sourcery/actors/events/event_consumer.hpp"

namespace sourcery::testing {

/// True when `status` reached `position` within `limit` (false if it
/// stopped first, or the time ran out).
inline bool reaches(handler_status& status, uint64_t position,
                    std::chrono::milliseconds limit = std::chrono::seconds{10}) {
  auto done = std::make_shared<std::promise<void>>();
  auto f = done->get_future();
  status.when_reached(position, [done](caf::error) { done->set_value(); });
  return f.wait_for(limit) == std::future_status::ready && status.position() >= position;
}

/// True when `status` stopped within `limit`.
inline bool stops(handler_status& status, std::chrono::milliseconds limit = std::chrono::seconds{5}) {
  reaches(status, std::numeric_limits<uint64_t>::max(), limit);
  return static_cast<bool>(status.stopped());
}

} // namespace sourcery::testing
