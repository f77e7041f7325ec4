#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>
#include <caf/message.hpp>

namespace sourcery::supervision {

/// When a terminated child is restarted (OTP's restart types).
enum class restart_type : uint8_t {
  permanent, ///< Always.
  transient, ///< Only after an abnormal exit (not normal, not shutdown).
  temporary, ///< Never; its spec is forgotten once it terminates.
};

/// How a child is stopped.
struct shutdown_policy {
  enum class kind : uint8_t {
    brutal_kill, ///< Killed at once (untrappable).
    timeout,     ///< Asked to shut down; killed if still alive after `time`.
    infinity,    ///< Asked to shut down; waited for as long as it takes.
  };
  kind how = kind::timeout;
  std::chrono::milliseconds time{5000};

  static shutdown_policy brutal_kill() { return {kind::brutal_kill, std::chrono::milliseconds{0}}; }
  static shutdown_policy timeout(std::chrono::milliseconds t) { return {kind::timeout, t}; }
  static shutdown_policy infinity() { return {kind::infinity, std::chrono::milliseconds{0}}; }
};

enum class child_type : uint8_t { worker, supervisor };

/// Exponential restart delay with jitter and a cap, for children whose
/// restarts should not hammer a resource. The n-th consecutive restart waits
/// `min(max, initial * multiplier^(n-1))`, scaled by a random factor in
/// [1 - jitter, 1 + jitter]. The count resets once the child has run for
/// `reset_after` (default: `max`).
struct backoff_policy {
  std::chrono::milliseconds initial{100};
  std::chrono::milliseconds max{10000};
  double multiplier = 2.0;
  double jitter = 0.2;
  std::optional<std::chrono::milliseconds> reset_after;

  /// The delay before restart number `n` (1-based) given a uniform random
  /// number `u` in [0, 1).
  std::chrono::milliseconds delay(uint32_t n, double u) const;
};

/// Starts a child: spawns it (not linked; the supervisor links it) and
/// returns its handle, or an error. `args` is empty for static children and
/// carries `start_child`'s arguments for simple_one_for_one children. It runs
/// inside the supervisor: it must not block.
using start_function = std::function<caf::expected<caf::actor>(caf::actor_system& system, const caf::message& args)>;

/// A child of a supervisor, as OTP's child spec: plain data, checked up front.
struct child_spec {
  std::string id;
  start_function start;
  restart_type restart = restart_type::permanent;
  /// Defaults: timeout(5 s) for workers, infinity for supervisors.
  std::optional<shutdown_policy> shutdown;
  child_type type = child_type::worker;
  /// Its termination may end the supervisor (see `auto_shutdown`).
  bool significant = false;
  std::optional<backoff_policy> backoff;

  shutdown_policy effective_shutdown() const {
    if (shutdown)
      return *shutdown;
    return type == child_type::supervisor ? shutdown_policy::infinity()
                                          : shutdown_policy::timeout(std::chrono::milliseconds{5000});
  }
};

/// A specific error (`supervision_errc`) for the first bad field, or none.
caf::error validate(const child_spec& spec);

} // namespace sourcery::supervision
