#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "sourcery/actors/events/event_handler.hpp"
#include "sourcery/actors/events/projector.hpp"
#include "sourcery/persistence/projection_store.hpp"
#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/runtime/observability/log.hpp"
#include "sourcery/runtime/observability/metrics.hpp"
#include "sourcery/runtime/commands/dispatcher.hpp"
#include "sourcery/runtime/commands/middleware.hpp"
#include "sourcery/runtime/commands/router.hpp"
#include "sourcery/runtime/process_managers/detail/process_manager_actors.hpp"
#include "sourcery/runtime/registration/registration.hpp"

namespace sourcery {

namespace detail {
class dispatch_deadlines;
} // namespace detail

struct application_config {
  /// Where the events live, as `--store` names it (persistence/store_uri.hpp):
  /// `lmdb:DIR`, `memory:` or `postgresql://...`. Empty: `data_dir`, or
  /// memory with `in_memory` (the shorthands of `--data-dir` and
  /// `--in-memory`).
  std::string store_uri;
  /// The LMDB store's directory (ignored with `in_memory` or `store_uri`).
  std::string data_dir = "sourcery-data";
  bool in_memory = false;
  /// Create the store when it is missing (store_open_options::create). Off:
  /// an application opens (and upgrades) an existing PostgreSQL store, and
  /// a schema holding none is no_store: `sourcery init` creates it. The
  /// tenant host sets it, since a tenant's store is made at its first use.
  bool create_store = false;
  /// A file with the master key that wraps the subjects' keys at rest
  /// (personal.hpp; `--master-key FILE`): 32 bytes or 64 hex digits.
  std::string master_key_file;
  persistence::durability durability = persistence::durability::durable;
  /// CAF scheduler threads (0: one per core).
  int scheduler_threads = 0;
  /// Use this store instead of opening one: several applications may share
  /// one store (as application instances on different machines share one
  /// database); optimistic concurrency keeps their aggregates consistent.
  /// The caller then owns upcasting (`event_store::use_registry`).
  std::shared_ptr<persistence::event_store> store;
  /// Where LMDB projections keep their read models (empty: `data_dir`/read-models,
  /// or a temporary directory removed at stop for an in-memory application).
  std::string read_model_dir;
  /// The runtime's log: supervisor reports, handler failures with their
  /// policy's decision, slow commands (see log.hpp; SOURCERY_LOG).
  log_config log = log_config::from_environment();
  /// A command slower than this (dispatch to answer) is logged as slow.
  std::chrono::milliseconds slow_command{250};
  /// Called once if the root supervision tree gives up (restart intensity
  /// reached): the application is then `failure()`d for good. Runs on the
  /// thread of the dying actor: hand the news over, do not block or stop
  /// the application from here. A host program may instead `await_failure`.
  std::function<void(const caf::error&)> on_failure;
  /// Adjusts the actor system's configuration before it starts: e.g. CAF's
  /// deterministic scheduler for tests (`scheduler.policy` = `testing`).
  std::function<void(caf::actor_system_config&)> configure_actors;
  /// Where aggregates and consumers run (registration.hpp). Null: all in
  /// this process. Other providers spread them over several processes
  /// (node_registration.hpp: nodes sharing a PostgreSQL store).
  std::shared_ptr<const registration_provider> registration;
};

/// A running Sourcery application: the actor system, the event store, the
/// root supervision tree (one simple_one_for_one supervisor per aggregate
/// type below it), the router and middleware. Start it from `main` or from a
/// host program; `stop` (or the destructor) shuts it down in order.
class application : public dispatcher {
public:
  /// Errors: the store's open errors; dispatch_errc::invalid_route (a
  /// command routed twice, an aggregate declared twice).
  static caf::expected<std::unique_ptr<application>> start(application_config config, router routes,
                                                           std::vector<std::shared_ptr<middleware>> middleware = {});

  ~application();
  application(const application&) = delete;
  application& operator=(const application&) = delete;

  // dispatch and dispatch_async: see dispatcher.

  /// An aggregate's current state, rebuilt from the store (every answered
  /// command's events are in it), for queries and tests. `A` must be routed.
  template <aggregate A>
  caf::expected<A> aggregate_state(const std::string& id) {
    auto host = hosts_.find(type_name_of<A>());
    if (host == hosts_.end())
      return make_error(dispatch_errc::invalid_route, "no route leads to aggregate " + type_name_of<A>());
    auto loaded = static_cast<const detail::aggregate_host_of<A>&>(*host->second).repo().load(id);
    if (!loaded)
      return loaded.error();
    return std::move(loaded->state);
  }

  /// Starts event handler `H` under the root supervisor (a transient child
  /// "handler:<name>"): it handles every event after its checkpoint, then
  /// each new one. `strong`: dispatches with strong consistency wait for it.
  /// `make` builds a fresh handler at each (re)start.
  /// Errors: invalid_route for a handler name already in use or an event
  /// type no routed aggregate produces; supervision errors.
  template <event_handler H>
  caf::expected<std::shared_ptr<handler_status>> add_handler(handler_options options = {}, bool strong = false,
                                                             std::function<std::unique_ptr<H>()> make = nullptr) {
    if (!make)
      make = [] { return std::make_unique<H>(); };
    if (auto err = check_handler_events<typename H::event>(H::handler_name))
      return err;
    watch_failures(options.on_error);
    from_now_on(options);
    return start_consumer(
      H::handler_name, strong,
      [&](auto status, auto started) {
        return handler_child_spec<H>(std::move(make), store_.get(), &types_, status, options, started, &prefixes_);
      },
      [store = store_.get()] { return store->load_checkpoint(std::string{"handler:"} + H::handler_name); });
  }

  /// Starts LMDB projection `P` under the root supervisor (a transient child
  /// "projection:<name>"), its read model in `read_models()`. Like a handler
  /// otherwise. Errors: as add_handler, and the read-model store's.
  template <projector P>
  caf::expected<std::shared_ptr<handler_status>> add_projection(handler_options options = {}, bool strong = false,
                                                                std::function<std::unique_ptr<P>()> make = nullptr) {
    if (!make)
      make = [] { return std::make_unique<P>(); };
    if (auto err = check_handler_events<typename P::event>(P::projection_name))
      return err;
    watch_failures(options.on_error);
    from_now_on(options);
    auto models = read_models();
    if (!models)
      return models.error();
    auto fresh = make; // the child spec takes `make`
    auto status = start_consumer(
      P::projection_name, strong,
      [&](auto status, auto started) {
        return projector_child_spec<P>(std::move(make), store_.get(), *models, &types_, status, options, started,
                                       &prefixes_);
      },
      [models = *models] { return models->checkpoint(P::projection_name); });
    if (status) {
      std::lock_guard guard{handlers_mtx_};
      // A rebuild replaces the read model (projection_store::replace): on a
      // shared database, in one transaction a writer elsewhere waits for.
      handlers_[P::projection_name].rebuild = [this, models = *models, fresh]() -> caf::error {
        auto reached = project_as_of<P>(*store_, types_, *models, P::projection_name, as_of{}, fresh(), {}, &prefixes_);
        return reached ? caf::error{} : reached.error();
      };
    }
    return status;
  }

  /// Starts process manager `P` under the root supervisor (a transient child
  /// "process:<name>"); its instances' states and its position live in
  /// `read_models()`. Errors: as add_handler.
  template <process_manager P>
  caf::expected<std::shared_ptr<handler_status>> add_process_manager(process_options options = {});

  /// The read models of LMDB projections, opened on first use.
  caf::expected<persistence::projection_store*> read_models();

  /// Rebuilds projection `name` from the log: stops it, builds its read
  /// model anew up to the head (projection_store::replace: on PostgreSQL
  /// in one transaction, so readers see the old one until then and a
  /// writer of it on another node waits), and starts it again from there.
  /// Returns once it runs; it then goes on like any projection
  /// (`handler(name)` tells how far). Errors: invalid_route for an unknown
  /// projection, and the rebuild's.
  caf::error rebuild_projection(const std::string& name);

  /// Forgets `subject` (personal.hpp): appends a `subject_forgotten` event,
  /// so that handlers and projections erase their copies (now, and again in
  /// any rebuild), then deletes the subject's key. From then on its
  /// personal fields read as forgotten everywhere (on every node of a
  /// cluster). Returns whether the subject had a key; forgetting it again,
  /// or an unknown subject, is not an error.
  /// Errors: invalid_argument (a subject of 0 or more than 400 bytes), and
  /// the store's (then call it again: it is idempotent).
  caf::expected<bool> forget(const std::string& subject);

  /// A handler's or projection's status by name, or nullptr.
  std::shared_ptr<handler_status> handler(const std::string& name) const;

  /// What an operator sees of one event handler, projection or process
  /// manager (/health, tools).
  struct handler_report {
    std::string name;
    std::string kind;  ///< "handler", "projection" or "process manager"
    /// "running"; "retrying" (its own storage fails: it tries again with
    /// backoff); "stopped" (its error policy stopped it on an event: an
    /// operator's turn); "elsewhere" (another process runs it: see registration.hpp).
    std::string state;
    uint64_t position = 0; ///< every event up to here is handled
    std::string reason;    ///< why it is retrying or stopped
  };
  /// Every handler, projection and process manager, by name. Never blocks
  /// on the store.
  std::vector<handler_report> handler_reports() const;
  /// Why the store cannot take writes now, as far as this process knows
  /// (persistence::event_store::health), or none.
  caf::error store_health() const;

  /// The runtime's logger; applications may log through it too.
  const sourcery::logger& logger() const noexcept { return *logger_; }

  /// Counters of commands, events, restarts and latencies.
  sourcery::metrics& metrics() noexcept { return metrics_; }
  /// Every metric in Prometheus text format, with each handler's lag (events
  /// in `$all` past its checkpoint) and the head of `$all`.
  std::string metrics_text() const;
  /// False once `stop` has begun or the tree has failed.
  bool running() const noexcept { return !stopped_.load() && !failed_.load(); }
  /// Why the root supervision tree gave up (restart intensity reached), or
  /// none while it runs. A failed application answers every dispatch with
  /// `unavailable` and /health with 503: restart the process.
  caf::error failure() const;
  /// Why this process does not serve now, for a while (the registration's
  /// outage: out of the group it serves with -- declared down, or cut off
  /// from the store -- and joining again by itself), or none. Unlike
  /// `failure`, it heals: /health answers 503 with it meanwhile.
  caf::error outage() const;
  /// Blocks until the tree fails (returns why), `stop` is called or
  /// `timeout` passes (return none).
  caf::error await_failure(std::chrono::milliseconds timeout = std::chrono::milliseconds::max());

  persistence::event_store& store() noexcept { return *store_; }
  /// The event types of every routed aggregate (for `project_as_of`, tools).
  const persistence::event_registry& event_types() const noexcept { return types_; }
  /// Where commands go (registration.hpp).
  sourcery::registration& registration() noexcept { return *registration_; }
  /// Where things run: this node's address, the live members it sees and
  /// the shards it serves now (empty, 0, 0 when alone or stopped).
  registration_description placement() const;
  caf::actor_system& system() noexcept { return *system_; }
  supervision::supervisor& root() noexcept { return *root_; }

  /// Stops the tree in order and closes the store. Idempotent. In a
  /// group the registration hands what runs here over first.
  void stop();

private:
  application();
  /// Reads a consumer's stored position.
  using checkpoint_reader = std::function<caf::expected<std::optional<uint64_t>>()>;

  template <class Variant>
  caf::error check_handler_events(const char* handler) const {
    caf::error err;
    [&]<class... Es>(std::type_identity<std::variant<Es...>>) {
      auto check = [&]<class E>(std::type_identity<E>) {
        if (!err && !types_.knows(E::type_name))
          err = make_error(dispatch_errc::invalid_route, std::string{"handler "} + handler + " handles "
                                                           + E::type_name + ", which no routed aggregate produces");
      };
      (check(std::type_identity<Es>{}), ...);
    }(std::type_identity<Variant>{});
    return err;
  }
  /// Registers a handler, projection or process manager called `name` and
  /// starts the child spec `make_spec(status, started)` returns under the root.
  /// It runs where the registration says (run_once); `checkpoint`
  /// reads its stored position, for strong dispatches on the other nodes.
  template <class MakeSpec>
  caf::expected<std::shared_ptr<handler_status>> start_consumer(const std::string& name, bool strong,
                                                                MakeSpec make_spec, checkpoint_reader checkpoint = {}) {
    auto status = std::make_shared<handler_status>(name);
    if (auto err = reserve_handler(status, strong, std::move(checkpoint)))
      return err;
    std::function<void(const caf::actor&)> started = [this, name](const caf::actor& a) { handler_started(name, a); };
    supervision::child_spec spec = make_spec(status, started);
    set_handler_child(name, spec.id);
    if (auto err = run_consumer(name, std::move(spec))) {
      forget_handler(name);
      return err;
    }
    return status;
  }
  /// Builds each routed aggregate type's host and hosts it with the registration.
  caf::error host_aggregates();
  caf::error reserve_handler(std::shared_ptr<handler_status> status, bool strong, checkpoint_reader checkpoint);
  /// Runs `spec` under the root where the registration says: here at once,
  /// or while this process holds the consumer's lease.
  caf::error run_consumer(const std::string& name, supervision::child_spec spec);
  /// The positions of strong handlers running in other processes, read
  /// from the store, for the strong dispatches waiting here. True: there
  /// were some.
  bool follow_remote_handlers();
  void forget_handler(const std::string& name);
  /// Records the child spec id of handler `name` (and so its kind).
  void set_handler_child(const std::string& name, const std::string& child_id);
  void handler_started(const std::string& name, const caf::actor& actor);
  void watch_head(uint64_t seen);
  /// Logs the store's outages (persistence::event_store::health) as they
  /// begin and end, until `watching_` ends.
  void watch_store_health();
  /// Records which handlers stopped on an event, and carries out the
  /// operator's requests for those running here (handler_control.hpp).
  void operate_handlers();
  std::thread health_watcher_;
  std::mutex health_mtx_;
  std::condition_variable health_cv_;
  /// The root supervisor has terminated (from its cleanup).
  void tree_down(const caf::error& reason);
  /// The application is down for good (`failure()`): logs, wakes waiters,
  /// tells `on_failure`. Once.
  void fail(caf::error why, std::string_view log_message);
  caf::error late_timeout(std::chrono::milliseconds waited) override;
  std::chrono::milliseconds submit(const typed_command& cmd, dispatch_options options, reply done) override;
  void complete_strong(const std::shared_ptr<dispatch_options>& opts, caf::expected<dispatch_result> r,
                       std::function<void(caf::expected<dispatch_result>)> done, std::chrono::steady_clock::time_point t0,
                       std::shared_ptr<const dispatch_context> ctx);
  /// Counts the command's outcome and latency, logs it if slow, then answers.
  void finish(std::chrono::steady_clock::time_point t0, caf::expected<dispatch_result> r,
              const std::function<void(caf::expected<dispatch_result>)>& done,
              const dispatch_context* ctx = nullptr);
  /// Has the failures `policy` decides about logged (keeping any observer).
  void watch_failures(error_policy& policy);
  /// `handler_start::current` means the head when the handler is added (not
  /// when its actor first runs, which may be after the caller's next
  /// dispatches): fixed here as a position. Its first checkpoint keeps it.
  template <class Options>
  void from_now_on(Options& options) const {
    if (options.start == handler_start::current) {
      options.start = handler_start::position;
      options.start_position = store_->head_position();
    }
  }

  struct handler_entry {
    std::shared_ptr<handler_status> status;
    bool strong = false;
    caf::actor actor;
    checkpoint_reader checkpoint;
    std::string child_id; // its child spec's: "handler:NAME", "projection:NAME", "process:NAME"
    std::string kind;     // handler, projection, process manager
    /// A projection's: builds its read model anew from the log.
    std::function<caf::error()> rebuild;
  };
  mutable std::mutex handlers_mtx_;
  std::map<std::string, handler_entry> handlers_;
  std::unique_ptr<persistence::projection_store> read_models_;
  std::string read_model_dir_;
  bool read_models_temporary_ = false;
  /// The store's URI when it is a server's (PostgreSQL).
  std::optional<persistence::store_uri> store_uri_;
  persistence::durability durability_ = persistence::durability::durable;
  std::thread head_watcher_; // tells handlers about new events, expires strong waits
  std::atomic<bool> watching_{false};
  struct strong_wait;
  std::mutex strong_mtx_;
  std::vector<std::shared_ptr<strong_wait>> strong_waits_;

  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> system_;
  std::shared_ptr<persistence::event_store> store_;
  std::optional<supervision::supervisor> root_;
  router router_;
  /// A command route with its aggregate's settings, by command name.
  struct resolved_route {
    const detail::command_route* route = nullptr;
    const aggregate_settings* settings = nullptr;
  };
  std::map<std::string, resolved_route, std::less<>> routes_;
  std::vector<std::shared_ptr<middleware>> middleware_;
  persistence::event_registry types_;
  stream_prefixes prefixes_; ///< of the routed aggregates, for handlers' `aggregate_id()`
  std::map<std::string, std::unique_ptr<detail::aggregate_host>, std::less<>> hosts_;
  std::shared_ptr<const registration_provider> provider_;
  std::unique_ptr<sourcery::registration> registration_;
  /// Receives the reports of every supervisor of the application.
  std::function<void(const supervision::supervisor_report&)> observer_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> failed_{false};
  mutable std::mutex failure_mtx_;
  std::condition_variable failure_cv_;
  caf::error failure_;
  caf::error outage_; ///< guarded by failure_mtx_
  std::function<void(const caf::error&)> on_failure_;
  std::unique_ptr<detail::dispatch_deadlines> deadlines_;
  sourcery::metrics metrics_;
  std::unique_ptr<sourcery::logger> logger_; // before any actor may log
  std::chrono::milliseconds slow_command_{250};
};

template <process_manager P>
caf::expected<std::shared_ptr<handler_status>> application::add_process_manager(process_options options) {
  if (auto err = check_handler_events<typename P::event>(P::process_name))
    return err;
  auto models = read_models();
  if (!models)
    return models.error();
  watch_failures(options.on_error);
  from_now_on(options);
  return start_consumer(P::process_name, false, [&](auto status, auto started) {
    return process_child_spec<P>(store_.get(), *models, &types_, &prefixes_, this, status, options, started);
  });
}

} // namespace sourcery
