#pragma once

// How a caller dispatches: the options of one dispatch. The answer
// (`dispatch_result`) and the errors (`dispatch_errc`) are the aggregate's
// side of the contract (actors/aggregates/command_result.hpp).

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "sourcery/actors/aggregates/command_envelope.hpp"
#include "sourcery/actors/aggregates/command_result.hpp"
#include "sourcery/persistence/metadata.hpp"

namespace sourcery {

struct dispatch_options {
  /// The command's deadline, blocking or not: without an answer by then, the
  /// dispatch answers `timeout` (a later answer is dropped) and an aggregate
  /// that has not begun the command yet skips it. A strong dispatch then
  /// waits up to `consistency_timeout` more for its handlers. Unset: the
  /// aggregate's `timeout` setting (5 s by default).
  std::optional<std::chrono::milliseconds> timeout;
  /// Recorded on the appended events. An empty correlation id gets a fresh one.
  std::string causation_id;
  std::string correlation_id;
  /// Recorded as the events' metadata; middleware may enrich it.
  sourcery::metadata metadata;
  returning returns = returning::nothing;
  /// eventual: answer once the events are stored. strong: answer once the
  /// strong event handlers (or those named in `consistent_with`) have
  /// handled them too, so their read models show the command's effect.
  /// Unset: the aggregate's `consistency` setting (eventual by default).
  std::optional<consistency> consistency_level;
  std::vector<std::string> consistent_with;
  /// How long a strong dispatch waits for its handlers after the events
  /// are stored; past it, `consistency_timeout` (the events stay stored).
  std::chrono::milliseconds consistency_timeout{5000};
};

} // namespace sourcery
