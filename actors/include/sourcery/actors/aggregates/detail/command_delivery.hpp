#pragma once

// A command envelope on its way to an aggregate's actor in this process,
// with where its answer goes.

#include <functional>
#include <memory>
#include <utility>

#include <caf/atom.hpp>
#include <caf/expected.hpp>
#include <caf/sec.hpp>
#include <caf/allowed_unsafe_message_type.hpp>

#include "sourcery/actors/aggregates/command_envelope.hpp"
#include "sourcery/actors/aggregates/command_result.hpp"

namespace sourcery::detail {

/// Where the answer to a command goes. It answers exactly once: with the
/// outcome, or, when the command is dropped unread (its registry or
/// aggregate died with the command in its mailbox), from its destructor with
/// `request_receiver_down`, so the caller learns at once that the command
/// was not executed instead of waiting for a timeout.
class reply_slot {
public:
  using callback = std::function<void(caf::expected<dispatch_result>)>;

  explicit reply_slot(callback f) : f_(std::move(f)) {}
  reply_slot(const reply_slot&) = delete;
  reply_slot& operator=(const reply_slot&) = delete;

  ~reply_slot() {
    if (f_)
      f_(caf::make_error(caf::sec::request_receiver_down,
                         "the command was dropped unexecuted: its aggregate or registry stopped first"));
  }

  void operator()(caf::expected<dispatch_result> result) {
    if (auto f = std::exchange(f_, nullptr))
      f(std::move(result));
  }

private:
  callback f_;
};

/// The envelope and its reply slot: the one message the registry and the
/// aggregates' actors take. Local only (the slot is a callback); what
/// crosses nodes is the envelope and the `dispatch_result`.
struct command_delivery {
  command_envelope envelope;
  std::shared_ptr<reply_slot> reply_to;
  /// How often it was routed again (a cluster backs off by it).
  uint32_t reroutes = 0;

  void answer(caf::expected<dispatch_result> r) {
    if (auto slot = std::exchange(reply_to, nullptr))
      (*slot)(std::move(r));
  }
};

using dispatch_atom = caf::atom_constant<caf::atom("dispatch")>;
using appended_atom = caf::atom_constant<caf::atom("ag_append")>;
using idle_atom = caf::atom_constant<caf::atom("ag_idle")>;
using passivate_atom = caf::atom_constant<caf::atom("ag_passiv")>;
using stop_atom = caf::atom_constant<caf::atom("ag_stop")>;
using gone_atom = caf::atom_constant<caf::atom("ag_gone")>;
/// To a registry: stop the actors of the streams a `stream_filter` selects
/// (their shard moved away, or this node stopped serving).
using release_atom = caf::atom_constant<caf::atom("ag_releas")>;

/// Which open streams a registry stops: a local message, never serialized.
struct stream_filter {
  std::function<bool(const std::string& stream)> selects;
};

} // namespace sourcery::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sourcery::detail::command_delivery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sourcery::detail::stream_filter)
