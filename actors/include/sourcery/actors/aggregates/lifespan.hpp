#pragma once

// How long an aggregate's actor stays alive once idle (aggregate.hpp).

#include <chrono>
#include <cstdint>

namespace sourcery {

/// How long an aggregate's actor stays alive once idle, chosen after each
/// command (Commanded's AggregateLifespan). An aggregate may define
/// `sourcery::lifespan after_event(const E&) const` for its events and
/// `sourcery::lifespan after_command(const C&) const` for its commands: after
/// an accepted command the last event decides, otherwise the command, and
/// without either the aggregate type's default applies.
struct lifespan {
  enum class kind : uint8_t { timeout, infinite, stop };
  kind how = kind::infinite;
  std::chrono::milliseconds time{0};

  static lifespan timeout(std::chrono::milliseconds t) { return {kind::timeout, t}; }
  static lifespan infinite() { return {kind::infinite, std::chrono::milliseconds{0}}; }
  /// Passivate as soon as the command is answered.
  static lifespan stop() { return {kind::stop, std::chrono::milliseconds{0}}; }
};

} // namespace sourcery
