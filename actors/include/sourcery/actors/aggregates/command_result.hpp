#pragma once

// The one answer to a command, from its aggregate's actor to whoever
// dispatched it (on this node or another): accepted or rejected, the
// version and positions, and, when asked, the events or the state as msgpack.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <msgpack.hpp>

#include "sourcery/actors/aggregates/aggregate.hpp"
#include "sourcery/persistence/event.hpp"
#include "sourcery/persistence/map_fields.hpp"

namespace sourcery {

struct dispatch_result {
  bool accepted = false;
  rejection why; ///< when rejected
  std::string aggregate_id;
  uint64_t version = 0;
  /// Positions of the command's events in `$all` (0 when none).
  uint64_t first_position = 0;
  uint64_t last_position = 0;
  std::vector<persistence::recorded_event> events; ///< with returning::events
  persistence::bytes state;                        ///< with returning::state: msgpack of the aggregate

  /// The state returned with returning::state, decoded; nullopt when none
  /// was returned or it does not decode as `A`.
  template <class A>
  std::optional<A> state_as() const {
    if (state.empty())
      return std::nullopt;
    try {
      auto oh = msgpack::unpack(reinterpret_cast<const char*>(state.data()), state.size());
      A out{};
      persistence::convert_map(oh.get(), out);
      return out;
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  friend bool operator==(const dispatch_result&, const dispatch_result&) = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rejection& x) {
  return f(caf::meta::type_name("sourcery.rejection"), x.reason, x.message);
}

} // namespace sourcery

namespace sourcery::persistence {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, uuid& x) {
  return f(caf::meta::type_name("sourcery.uuid"), x.bytes);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, recorded_event& x) {
  return f(caf::meta::type_name("sourcery.recorded_event"), x.event_id, x.stream_id, x.stream_version, x.position,
           x.type, x.schema_version, x.data, x.metadata, x.causation_id, x.correlation_id, x.created_at);
}

} // namespace sourcery::persistence

namespace sourcery {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, dispatch_result& x) {
  return f(caf::meta::type_name("sourcery.dispatch_result"), x.accepted, x.why, x.aggregate_id, x.version,
           x.first_position, x.last_position, x.events, x.state);
}

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
  /// (see `application::failure`): nothing runs until it is restarted. In a
  /// cluster also: this node was declared down, or the link to the node
  /// running the command broke before it answered (the message says whether
  /// the command may have run).
  unavailable,
  /// The envelope's payload does not decode as its command type (a peer
  /// built from other code, or corrupt bytes); nothing was executed.
  malformed_command,
  /// Between a cluster's nodes: this node does not (or no longer) serve the
  /// aggregate's shard, and nothing was executed; the sender refreshes its
  /// view and sends the command again until its deadline. A caller only
  /// sees `unavailable` or `timeout`.
  moved,
  /// Between a cluster's nodes: the command is larger than a link carries
  /// (`cluster_settings::max_frame_bytes`), and nothing was executed; or
  /// its answer is, and the message says that the command ran.
  too_large,
};

constexpr caf::atom_value dispatch_error_category = caf::atom("dispatch");

caf::error make_error(dispatch_errc code, std::string message);
dispatch_errc code_of_dispatch(const caf::error& err) noexcept;
std::string_view to_string(dispatch_errc code) noexcept;
/// A readable rendering of any error Sourcery returns.
std::string describe_error(const caf::error& err);

} // namespace sourcery
