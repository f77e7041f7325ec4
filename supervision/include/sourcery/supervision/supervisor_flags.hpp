#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include <caf/error.hpp>

namespace sourcery::supervision {

/// How a supervisor reacts to a child's termination.
enum class strategy : uint8_t {
  one_for_one,        ///< Restart that child.
  one_for_all,        ///< Stop all others (reverse order), restart all (in order).
  rest_for_one,       ///< Stop the children after it (reverse), restart it and them.
  simple_one_for_one, ///< Dynamic children of one spec, started with arguments.
};

/// What a supervisor tells its observer (OTP's supervisor reports).
struct supervisor_report {
  enum class kind : uint8_t {
    child_terminated, ///< A child exited abnormally (before any restart).
    child_restarted,  ///< A restart of the child (or its group) begins.
    shutdown,         ///< Restart intensity reached: the supervisor gives up.
  };
  kind what = kind::child_terminated;
  std::string supervisor; ///< `supervisor_flags::name`
  std::string child;      ///< The child's id; for simple_one_for_one children, the spec id and arguments.
  std::string reason;     ///< The exit reason, readable.
};

/// When the termination of significant children ends the supervisor.
enum class auto_shutdown : uint8_t { never, any_significant, all_significant };

struct supervisor_flags {
  /// For printed trees and logs.
  std::string name = "supervisor";
  strategy how = strategy::one_for_one;
  /// More than `intensity` restarts within `period` and the supervisor gives
  /// up: it terminates its children, then itself (OTP's defaults: 1 in 5 s).
  int intensity = 1;
  std::chrono::milliseconds period{5000};
  auto_shutdown shutdown = auto_shutdown::never;
  /// Seed of the backoff jitter (0: random).
  uint64_t seed = 0;
  /// Called from the supervisor's actor for each report (logs, metrics):
  /// it must be quick and must not block.
  std::function<void(const supervisor_report&)> observer = {};
};

caf::error validate(const supervisor_flags& flags);

std::string_view to_string(strategy s) noexcept;

} // namespace sourcery::supervision
