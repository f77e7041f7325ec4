#pragma once

// The seam between dispatch and aggregates (Commanded's Registration
// adapter): given an envelope, find the aggregate of its stream -- opening
// it when needed -- and answer. The local registration hosts every
// aggregate in this process, under the application's supervision tree; a
// cluster registration hosts each on the node that owns it and forwards
// the envelope there.

#include <functional>
#include <memory>

#include <caf/expected.hpp>

#include "sourcery/actors/aggregates/command_envelope.hpp"
#include "sourcery/actors/aggregates/command_result.hpp"
#include "sourcery/supervision/supervisor.hpp"

namespace caf {
class actor_system;
}

namespace sourcery {

namespace detail {
class aggregate_host;
}

class registration {
public:
  using reply = std::function<void(caf::expected<dispatch_result>)>;

  virtual ~registration();

  /// Hosts an aggregate type (called once per type as the application
  /// starts, before any command). `host` outlives the registration's actors.
  /// Errors: supervision errors starting its subtree.
  virtual caf::error host(const detail::aggregate_host& host) = 0;

  /// Routes `cmd` to the aggregate of `cmd.stream_id`, opening it when
  /// needed. `done` is called exactly once, on any thread: with the answer,
  /// with `request_receiver_down` when the command was dropped unexecuted
  /// (its aggregate or registry stopped first), or with
  /// unregistered_command for an aggregate type not hosted here. Deadlines
  /// are the caller's: an aggregate skips a command whose deadline passed.
  virtual void route(command_envelope cmd, reply done) = 0;
};

/// Hosts every aggregate in this process: per aggregate type, a subtree
/// under `root`:
///
///     aggregate:<name> (one_for_all)
///     ├── aggregates (simple_one_for_one: one temporary child per open aggregate)
///     └── registry   (routes envelopes to them, opens and passivates them)
///
/// one_for_all: a registry that crashes forgets its routes, so the open
/// aggregates go with it and reopen from the store on their next command.
/// `observer` receives the subtree supervisors' reports.
std::unique_ptr<registration>
make_local_registration(caf::actor_system& system, supervision::supervisor& root,
                        std::function<void(const supervision::supervisor_report&)> observer);

} // namespace sourcery
