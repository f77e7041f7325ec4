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
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/meta/type_name.hpp>

#include "sourcery/actors/aggregates/detail/command_delivery.hpp"
#include "sourcery/runtime/registration/registration.hpp"

namespace sourcery::cluster::detail {

/// Commands between two nodes travel in batches: whatever the link has
/// queued for a peer when it gets to it goes in one message, and the
/// answers come back the same way -- one message (and one serialization
/// pass, one wake-up) for many commands under load, one for one otherwise.
struct forward_batch {
  std::string from;        ///< the sending node, as the members table names it
  int64_t incarnation = 0; ///< and the incarnation it serves as: only up members are served
  std::vector<uint64_t> ids; ///< the sender's, to match the answers
  std::vector<command_envelope> envelopes;
};

struct forward_answer {
  uint64_t id = 0;
  bool ok = false;
  dispatch_result result; ///< when ok
  caf::error error;       ///< otherwise (`moved`: nothing ran)
};

struct answer_batch {
  std::vector<forward_answer> answers;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, forward_batch& x) {
  return f(caf::meta::type_name("sourcery.forward_batch"), x.from, x.incarnation, x.ids, x.envelopes);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, forward_answer& x) {
  return f(caf::meta::type_name("sourcery.forward_answer"), x.id, x.ok, x.result, x.error);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, answer_batch& x) {
  return f(caf::meta::type_name("sourcery.answer_batch"), x.answers);
}

/// (forward_atom, node, command_delivery): send a command to `node`.
/// (forward_atom, forward_batch): a peer's commands.
using forward_atom = caf::atom_constant<caf::atom("cl_forward")>;
/// (retry_atom, command_delivery): route a command again (after a pause).
using retry_atom = caf::atom_constant<caf::atom("cl_retry")>;
/// (nudge_atom, node): tell `node` the membership changed; (nudge_atom,
/// from, incarnation): told so by a peer; (nudge_atom, true): a nudge held
/// back by the rate limit, taken now.
using nudge_atom = caf::atom_constant<caf::atom("cl_nudge")>;
/// (answer_atom, answer_batch): a peer's answers; (answer_atom, link, forward_answer): one of ours, to send back.
using answer_atom = caf::atom_constant<caf::atom("cl_answer")>;
/// (flush_atom, node) / (flush_atom, link): send what is queued for a peer.
using flush_atom = caf::atom_constant<caf::atom("cl_flush")>;
/// (sweep_atom): answer `timeout` for commands whose peer never answered.
using sweep_atom = caf::atom_constant<caf::atom("cl_sweep")>;
/// (hello_atom, node, incarnation): over TLS, the peer that opened the
/// link introduces itself (see `opens_link`); (hello_atom, node): waiting
/// for that hello timed out.
using hello_atom = caf::atom_constant<caf::atom("cl_hello")>;
/// (verify_atom, node, incarnation): the members were read again since
/// `node` sent what `admits` refused (see `node_link_hooks::verify`).
using verify_atom = caf::atom_constant<caf::atom("cl_verify")>;
/// (ping_atom, nodes): ask each of `nodes` for a pong over its link, each
/// answer (or silence past `ping_timeout`) reported to `hooks.reachable`.
/// (ping_atom) from a peer: answered with pong_atom.
using ping_atom = caf::atom_constant<caf::atom("cl_ping")>;
/// (tenant_atom, node, tenant): ask `node` to open `tenant` (a consumer of
/// it is placed there); (tenant_atom, from, incarnation, tenant): asked so
/// by a peer.
using tenant_atom = caf::atom_constant<caf::atom("cl_tenant")>;
using pong_atom = caf::atom_constant<caf::atom("cl_pong")>;

/// Registers the messages that cross nodes (on every node, with the same names).
void add_link_message_types(caf::actor_system_config& cfg);

struct node_link_hooks {
  /// A peer's command: run it here, or answer `moved`. Called on the link's
  /// thread; `done` may be called on any thread.
  std::function<void(command_envelope, registration::reply)> serve;
  /// A command to route again: its node answered `moved` or was out of reach.
  std::function<void(sourcery::detail::command_delivery)> reroute;
  /// A peer says the membership changed (at most once per `nudge_interval`:
  /// nudges coming faster are taken together, at the end of it).
  std::function<void()> nudged;
  std::chrono::milliseconds nudge_interval{100};
  /// Links over TLS (CAF's OpenSSL module, see `links_manager`).
  bool tls = false;
  /// This node's name, and the incarnation it serves as now: sent with its
  /// batches and nudges.
  std::string node;
  std::function<int64_t()> incarnation;
  /// Whether `node` is an up member as `incarnation`, as this node last
  /// read the members: only those are served and heard. Unset: everyone
  /// (tests of the link alone).
  std::function<bool(const std::string& node, int64_t incarnation)> admits;
  /// A sender `admits` refused may have joined since the last reading (a
  /// member just started): read the members again, then send the link
  /// (verify_atom, node, incarnation). Meanwhile its batches are answered
  /// `moved` (routed again) and its nudges wait; only then are they
  /// refused for good. At most `max_verifying` senders at once; unset: refused at once.
  std::function<void(const std::string& node, int64_t incarnation)> verify;
  size_t max_verifying = 16;
  /// Messages from a peer that is not an up member were refused (`what`:
  /// "batch", "nudge"; `count` of them), or a message the link does not
  /// know was dropped ("unknown"; `from` empty). Called on the link's thread.
  std::function<void(const char* what, const std::string& from, uint64_t count)> refused;
  /// How long a connection attempt may take.
  std::chrono::milliseconds connect_timeout{1000};
  /// Pause before a command is routed again.
  std::chrono::milliseconds retry_after{20};
  /// How long past its deadline a command waits for its peer's answer
  /// before it is answered `timeout` here (a message lost on a link that
  /// never closed).
  std::chrono::milliseconds answer_grace{1000};
  /// A ping's outcome: `node` answered over its link (true), or not
  /// within `ping_timeout` / could not be connected to (false). Called on
  /// the link's thread.
  std::function<void(const std::string& node, bool answered)> reachable;
  std::chrono::milliseconds ping_timeout{1000};
  /// An up member asks this node to open a tenant (tenant_atom). Called on
  /// the link's thread: must not block.
  std::function<void(const std::string& tenant)> open_tenant;
  /// Counts commands sent to peers.
  std::atomic<uint64_t>* forwarded = nullptr;
};

caf::actor spawn_node_link(caf::actor_system& sys, node_link_hooks hooks);

/// The actor that opens, accepts and closes links: the OpenSSL module's
/// (mutual TLS) or the plain middleman's.
caf::io::middleman_actor links_manager(caf::actor_system& sys, bool tls);

} // namespace sourcery::cluster::detail
