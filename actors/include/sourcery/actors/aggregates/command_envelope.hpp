#pragma once

// A command as data: what travels from `dispatch` to the actor of its
// aggregate, on this node or (through a registration that crosses nodes)
// another. Everything in it is plain, serializable data: the command itself
// is a msgpack map, decoded only by the route on the aggregate's side.

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>

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

struct command_envelope {
  std::string aggregate_type; ///< the aggregate's name (its `type_name`, or C++ name)
  std::string stream_id;      ///< prefix + identity
  std::string command_type;   ///< the command's name (its `type_name`, or C++ name)
  persistence::bytes payload; ///< the command, a msgpack map
  persistence::bytes metadata; ///< a msgpack map recorded on the events (empty: none)
  std::string causation_id;
  std::string correlation_id;
  returning returns = returning::nothing;
  /// Past this the caller has been answered `timeout`: a command not begun
  /// by then is skipped. On the wire it travels as the time left.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  /// The tenant whose application runs it, where one node hosts several
  /// (application_host.hpp); empty: the node's only application.
  std::string tenant;

  /// Milliseconds left until the deadline (-1: none).
  int64_t time_left_ms() const {
    if (deadline == std::chrono::steady_clock::time_point::max())
      return -1;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    return left < 0 ? 0 : left;
  }

  friend bool operator==(const command_envelope&, const command_envelope&) = default;
};

/// CAF serialization (node to node). The deadline travels as the time left,
/// so clocks of different machines need not agree.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, command_envelope& x) {
  auto returns = static_cast<uint8_t>(x.returns);
  int64_t left = x.time_left_ms();
  return f(caf::meta::type_name("sourcery.command_envelope"), x.aggregate_type, x.stream_id, x.command_type,
           x.payload, x.metadata, x.causation_id, x.correlation_id, returns, left, x.tenant,
           caf::meta::load_callback([&]() -> caf::error {
             x.returns = static_cast<returning>(returns);
             x.deadline = left < 0 ? std::chrono::steady_clock::time_point::max()
                                   : std::chrono::steady_clock::now() + std::chrono::milliseconds{left};
             return {};
           }));
}

} // namespace sourcery
