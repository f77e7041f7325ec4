#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <caf/atom.hpp>
#include <caf/error.hpp>

namespace sourcery::supervision {

/// Error codes of supervisors and child specs, in category
/// `supervision_error_category`, with a human message as context.
enum class supervision_errc : uint8_t {
  none = 0,
  /// A child spec has an empty or too long id.
  invalid_child_id,
  /// A child spec has no start function.
  invalid_start,
  /// A child spec is significant but permanent (OTP forbids it: a permanent
  /// child never terminates for good, so it cannot end its supervisor).
  invalid_significant,
  /// A shutdown timeout is zero or negative.
  invalid_shutdown,
  /// A backoff policy has a zero delay, a cap below its first delay, a
  /// multiplier below 1 or a jitter outside [0, 1].
  invalid_backoff,
  /// Supervisor flags: negative intensity, non-positive period, or a
  /// simple_one_for_one supervisor without exactly one child spec template.
  invalid_flags,
  /// A child with this id already exists.
  duplicate_child_id,
  /// No child with this id (or actor).
  child_not_found,
  /// delete_child on a running child, or restart_child on a running one.
  child_running,
  /// The operation does not exist for this strategy (e.g. start_child with a
  /// spec on a simple_one_for_one supervisor).
  wrong_strategy,
  /// A child's start function failed; the message carries its reason.
  start_failed,
  /// More than `intensity` restarts within `period`: the supervisor
  /// terminated its children and itself. Counts as a shutdown for transient
  /// parents (as OTP's `shutdown`).
  reached_max_restart_intensity,
  /// The supervisor is shutting down and refuses new work.
  shutting_down,
};

constexpr caf::atom_value supervision_error_category = caf::atom("supervisor");

std::string_view to_string(supervision_errc code) noexcept;

caf::error make_error(supervision_errc code, std::string message);

/// The `supervision_errc` of `err`, or `none` for other categories.
supervision_errc code_of(const caf::error& err) noexcept;

/// "code: message" for supervision errors, CAF's rendering for others.
std::string describe(const caf::error& err);

} // namespace sourcery::supervision
