#pragma once

// The seam between the application and where things run (Commanded's
// Registration adapter): given an envelope, find the aggregate of its
// stream -- opening it when needed -- and answer; given a named handler,
// projection or process manager, run it in one place. The local
// registration hosts every aggregate and consumer in this process, under
// the application's supervision tree; a cluster's (runtime/cluster) hosts
// each aggregate on the node that owns it and forwards the envelope there,
// and runs each consumer on the node holding its lease.
//
// The application names no implementation: `application_config::registration`
// gives a provider (null: the local one), which adjusts the actor system's
// configuration before it starts and then builds the registration.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <caf/expected.hpp>

#include "sourcery/actors/aggregates/command_envelope.hpp"
#include "sourcery/actors/aggregates/command_result.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/supervision/supervisor.hpp"

namespace caf {
class actor_system;
class actor_system_config;
} // namespace caf

namespace sourcery {

class logger;
class registration_provider;

namespace persistence {
class append_fence;
} // namespace persistence

namespace detail {
class aggregate_host;
}

/// Where a registration runs things, as operators see it (/cluster, tools).
struct registration_description {
  std::string node;        ///< this node's address ("" when alone)
  size_t members = 0;      ///< live members it sees (0 when alone)
  size_t shards_owned = 0; ///< shards it serves now (0 when alone)
};

class registration {
public:
  using reply = std::function<void(caf::expected<dispatch_result>)>;

  virtual ~registration();

  /// Hosts an aggregate type (called once per type as the application
  /// starts, before any command and before `start`). `host` outlives the
  /// registration's actors. Errors: supervision errors starting its subtree.
  virtual caf::error host(const detail::aggregate_host& host) = 0;

  /// Starts serving, once every aggregate type is hosted (a cluster's joins
  /// here: peers may send commands from now on). Errors: the
  /// implementation's (a cluster's: an address it cannot listen on, a store
  /// that cannot be shared).
  virtual caf::error start() = 0;

  /// Stops serving, while the application still runs: a cluster's hands its
  /// shards and consumers over and leaves. Idempotent.
  virtual void stop() = 0;

  /// Routes `cmd` to the aggregate of `cmd.stream_id`, opening it when
  /// needed. `done` is called exactly once, on any thread: with the answer,
  /// with `request_receiver_down` when the command was dropped unexecuted
  /// (its aggregate or registry stopped first), or with
  /// unregistered_command for an aggregate type not hosted here. Deadlines
  /// are the caller's: an aggregate skips a command whose deadline passed.
  virtual void route(command_envelope cmd, reply done) = 0;

  /// Runs consumer `name` (a handler, projection or process manager) in one
  /// place: `start` starts it, `stop` stops it. The local registration
  /// calls `start` at once and returns its error; a cluster's calls it
  /// whenever this node holds the consumer's lease, and `stop` when it
  /// loses or hands the lease over (never two running at once), and
  /// returns none.
  virtual caf::error run_once(const std::string& name, std::function<caf::error()> start,
                              std::function<void()> stop) = 0;

  /// Whether consumer `name` runs in this process now (a consumer running
  /// elsewhere: its progress must be read from the store).
  virtual bool runs_here(const std::string& name) const = 0;

  /// The fence the stores check writes against (append_fence.hpp), or null
  /// when nothing needs fencing (alone: no other writer to fence out).
  virtual std::shared_ptr<const persistence::append_fence> fence() const = 0;

  /// Why this process does not serve now, for a while (a cluster's: out of
  /// its cluster, joining again by itself), or none.
  virtual caf::error outage() const = 0;

  /// Appends the registration's own metrics, Prometheus text format.
  virtual void render_metrics(std::string& out) const = 0;

  virtual registration_description describe() const = 0;

  // -- tenants (application_host.hpp) -------------------------------------------
  /// The provider of tenant `name`'s registration when the tenants of an
  /// application_host share this one -- a cluster node's: one membership,
  /// one set of links, one placement of shards for every tenant, each
  /// tenant's aggregates and consumers running in its own application --
  /// or null (the default): each tenant runs alone.
  virtual std::shared_ptr<const registration_provider> tenant_provider(const std::string& name);
  /// How this registration has a tenant opened in this process when a peer
  /// needs it here (a command for it, a consumer of it placed here). `open`
  /// must not block: the host opens the tenant on a thread of its own.
  virtual void open_tenants_with(std::function<void(const std::string& name)> open);
  /// When this registration last worked for others -- ran a command a peer
  /// sent, or runs a consumer now (a tenant's, on a cluster node) -- or the
  /// epoch if never: an application_host keeps such a tenant open as if used.
  virtual std::chrono::steady_clock::time_point last_busy() const;
};

/// What a registration receives from the application that builds it. The
/// references outlive the registration.
struct registration_context {
  caf::actor_system& system;
  supervision::supervisor& root;
  /// Receives the reports of the supervisors the registration starts.
  std::function<void(const supervision::supervisor_report&)> observer;
  const sourcery::logger& log;
  persistence::event_store& store;
  /// The store's URI when it is a server's (PostgreSQL), else none.
  std::optional<persistence::store_uri> store_uri;
  /// This process stops serving for a while (`why`); it heals by itself.
  std::function<void(const caf::error& why)> on_outage;
  /// It serves again after `on_outage`.
  std::function<void()> on_recovered;
  /// It must stop for good (another process took its place).
  std::function<void(const caf::error& why)> on_failure;
};

/// Chooses an application's registration (application_config::registration).
class registration_provider {
public:
  virtual ~registration_provider();
  /// Adjusts the actor system's configuration before it starts (message
  /// types, the middleman). The default adjusts nothing.
  virtual void configure(caf::actor_system_config& cfg) const;
  /// Builds the registration. Errors: the implementation's (bad settings,
  /// a store it cannot work with).
  virtual caf::expected<std::unique_ptr<registration>> create(registration_context ctx) const = 0;
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
/// Consumers run under `root` at once. `observer` receives the subtree
/// supervisors' reports.
std::unique_ptr<registration>
make_local_registration(caf::actor_system& system, supervision::supervisor& root,
                        std::function<void(const supervision::supervisor_report&)> observer);

/// The provider of the local registration (what a null
/// `application_config::registration` means).
std::shared_ptr<const registration_provider> local_registration_provider();

} // namespace sourcery
