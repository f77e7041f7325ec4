#pragma once

#include <any>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/error.hpp>

#include "sourcery/actors/aggregate.hpp"
#include "sourcery/persistence/event.hpp"

namespace sourcery {

/// What a dispatch returns besides accepted / rejected.
enum class returning : uint8_t {
  nothing,
  events,  ///< the recorded events the command appended
  state,   ///< the aggregate's state after the command (`dispatch_result::state_as<A>()`)
  version, ///< the aggregate's version after the command
};

enum class consistency : uint8_t { eventual, strong };

struct dispatch_options {
  /// The command's deadline, blocking or not: without an answer by then, the
  /// dispatch answers `timeout` (a later answer is dropped) and an aggregate
  /// that has not begun the command yet skips it. A strong dispatch then
  /// waits up to `consistency_timeout` more for its handlers.
  std::chrono::milliseconds timeout{5000};
  /// Recorded on the appended events. An empty correlation id gets a fresh one.
  std::string causation_id;
  std::string correlation_id;
  /// A msgpack map recorded as the events' metadata; middleware may enrich it.
  persistence::bytes metadata;
  returning returns = returning::nothing;
  /// eventual: answer once the events are stored. strong: answer once the
  /// strong event handlers (or those named in `consistent_with`) have
  /// handled them too, so their read models show the command's effect.
  consistency consistency_level = consistency::eventual;
  std::vector<std::string> consistent_with;
  /// How long a strong dispatch waits for its handlers after the events
  /// are stored; past it, `consistency_timeout` (the events stay stored).
  std::chrono::milliseconds consistency_timeout{5000};
};

struct dispatch_result {
  bool accepted = false;
  rejection why; ///< when rejected
  std::string aggregate_id;
  uint64_t version = 0;
  /// Positions of the command's events in `$all` (0 when none).
  uint64_t first_position = 0;
  uint64_t last_position = 0;
  std::vector<persistence::recorded_event> events; ///< with returning::events
  std::any state;                                  ///< with returning::state

  template <class A>
  const A* state_as() const {
    return std::any_cast<A>(&state);
  }
};

/// Errors of dispatch (category `dispatch_error_category`); domain rejections
/// are not errors but `dispatch_result`s.
enum class dispatch_errc : uint8_t {
  none = 0,
  /// No route for this command type.
  unregistered_command,
  /// A middleware refused the command; the message says which and why.
  halted,
  /// No answer within the dispatch timeout. The command may still complete.
  timeout,
  /// The application has stopped.
  stopped,
  /// Two routes for one command type, a handler for events no route
  /// produces, or a handler name used twice.
  invalid_route,
  /// A strong dispatch: the events are stored, but a handler did not handle
  /// them in time (or has stopped). The command is not to be retried.
  consistency_timeout,
  /// The command's aggregate identity is empty (Commanded's
  /// `invalid_aggregate_identity`); nothing was executed.
  invalid_identity,
  /// The application's supervision tree gave up after repeated failures
  /// (see `application::failure`): nothing runs until it is restarted.
  unavailable,
};

constexpr caf::atom_value dispatch_error_category = caf::atom("dispatch");

caf::error make_error(dispatch_errc code, std::string message);
dispatch_errc code_of_dispatch(const caf::error& err) noexcept;
std::string_view to_string(dispatch_errc code) noexcept;
/// A readable rendering of any error Sourcery returns.
std::string describe_error(const caf::error& err);

} // namespace sourcery
