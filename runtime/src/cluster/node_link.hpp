#pragma once

// This node's link to its peers over CAF's middleman: one actor, published
// at the node's address, that sends commands to the nodes owning them and
// takes the commands its peers send here. Connections are made on demand
// (asynchronously, with a deadline: a frozen peer holds up only its own
// commands) and dropped when the middleman reports the peer gone.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>

#include "sourcery/actors/aggregates/detail/command_delivery.hpp"
#include "sourcery/runtime/registration/registration.hpp"

namespace sourcery::cluster::detail {

/// (forward_atom, node, command_delivery): send a command to `node`.
/// (forward_atom, command_envelope) -> dispatch_result: a peer's command.
using forward_atom = caf::atom_constant<caf::atom("cl_forward")>;
/// (retry_atom, command_delivery): route a command again (after a pause).
using retry_atom = caf::atom_constant<caf::atom("cl_retry")>;
/// (nudge_atom, node): tell `node` the membership changed; (nudge_atom): told so.
using nudge_atom = caf::atom_constant<caf::atom("cl_nudge")>;
/// (answer_atom, token, dispatch_result | error): a served command's answer.
using answer_atom = caf::atom_constant<caf::atom("cl_answer")>;

struct node_link_hooks {
  /// A peer's command: run it here, or answer `moved`. Called on the link's
  /// thread; `done` may be called on any thread.
  std::function<void(command_envelope, registration::reply)> serve;
  /// A command to route again: its node answered `moved` or was out of reach.
  std::function<void(sourcery::detail::command_delivery)> reroute;
  /// A peer says the membership changed.
  std::function<void()> nudged;
  /// How long a connection attempt may take.
  std::chrono::milliseconds connect_timeout{1000};
  /// Pause before a command is routed again.
  std::chrono::milliseconds retry_after{20};
  /// Counts commands sent to peers.
  std::atomic<uint64_t>* forwarded = nullptr;
};

caf::actor spawn_node_link(caf::actor_system& sys, node_link_hooks hooks);

} // namespace sourcery::cluster::detail
