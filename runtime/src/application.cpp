#include "sourcery/runtime/application.hpp"

#include <filesystem>
#include <thread>

#include <caf/io/middleman.hpp>

#include "cluster/cluster_registration.hpp"
#include "cluster/node_link.hpp"
#include "commands/dispatch_deadlines.hpp"
#include "sourcery/persistence/memory_store.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/persistence/uuid.hpp"

namespace sourcery {

namespace {

/// Supervisor reports as OTP's logger shows them: a terminated child is a
/// warning, a restart news, a supervisor giving up an error.
void log_supervisor_report(const logger& log, const supervision::supervisor_report& r) {
  using kind = supervision::supervisor_report::kind;
  switch (r.what) {
    case kind::child_terminated:
      log.warn("supervisor", "child terminated", {{"supervisor", r.supervisor}, {"child", r.child}, {"reason", r.reason}});
      break;
    case kind::child_restarted:
      log.info("supervisor", "child restarted", {{"supervisor", r.supervisor}, {"child", r.child}, {"reason", r.reason}});
      break;
    case kind::shutdown:
      log.error("supervisor", "restart intensity reached; shutting down",
                {{"supervisor", r.supervisor}, {"child", r.child}, {"reason", r.reason}});
      break;
  }
}

const char* decision_of(const error_action& a) {
  switch (a.what) {
    case error_action::kind::retry: return "retry";
    case error_action::kind::skip: return "skip";
    case error_action::kind::stop: return "stop";
  }
  return "stop";
}

} // namespace

application::application() = default;

caf::expected<std::unique_ptr<application>> application::start(application_config config, router routes,
                                                               std::vector<std::shared_ptr<middleware>> middleware) {
  if (!routes.conflicts().empty())
    return make_error(dispatch_errc::invalid_route, routes.conflicts().front());
  std::unique_ptr<application> app{new application};
  const bool shared_store = config.store != nullptr;
  if (!shared_store && !config.store_uri.empty()) {
    auto uri = persistence::store_uri::parse(config.store_uri);
    if (!uri)
      return uri.error();
    if (uri->type == persistence::store_uri::kind::memory)
      config.in_memory = true;
    else if (uri->type == persistence::store_uri::kind::lmdb)
      config.data_dir = uri->location;
    else
      app->store_uri_ = *uri;
  }
  if (shared_store) {
    app->store_ = std::move(config.store);
  } else if (app->store_uri_) {
    persistence::store_open_options opts;
    opts.mode = config.durability;
    auto store = persistence::open_store(*app->store_uri_, opts);
    if (!store)
      return store.error();
    app->store_ = std::move(*store);
  } else if (config.in_memory) {
    app->store_ = std::make_unique<persistence::memory_store>();
  } else {
    persistence::lmdb_options opts;
    opts.path = config.data_dir;
    opts.mode = config.durability;
    auto store = persistence::lmdb_store::open(opts);
    if (!store)
      return store.error();
    app->store_ = std::move(*store);
  }
  app->cfg_.set("logger.verbosity", caf::atom("quiet"));
  int threads = config.scheduler_threads > 0 ? config.scheduler_threads
                                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app->cfg_.set("scheduler.max-threads", threads);
  if (!config.cluster.name.empty()) {
    if (!app->store_uri_)
      return persistence::make_error(persistence::store_errc::invalid_argument,
                                     "the nodes of a cluster share one PostgreSQL store: give store_uri postgresql://...");
    app->cluster_settings_ = config.cluster;
    app->coordination_.conninfo = app->store_uri_->location;
    app->coordination_.schema = app->store_uri_->schema;
    app->coordination_.connect_timeout = app->store_uri_->connect_timeout;
    // A frozen database must not hold a renewal past the point where this
    // node stops serving.
    app->coordination_.operation_timeout = config.cluster.down_after / 2;
    app->cfg_.load<caf::io::middleman>();
    app->cfg_.add_message_type<command_envelope>("sourcery.command_envelope");
    app->cfg_.add_message_type<dispatch_result>("sourcery.dispatch_result");
    cluster::detail::add_link_message_types(app->cfg_);
    // Peers probe each other: a silent link is closed, and its commands
    // routed again, instead of waiting on a dead TCP connection.
    app->cfg_.set("middleman.heartbeat-interval", caf::timespan{config.cluster.probe_every});
    app->cfg_.set("middleman.connection-timeout", caf::timespan{config.cluster.down_after});
  }
  if (config.configure_actors)
    config.configure_actors(app->cfg_);
  app->system_ = std::make_unique<caf::actor_system>(app->cfg_);
  supervision::supervisor_flags root_flags;
  root_flags.name = "app_root";
  root_flags.intensity = 10;
  root_flags.period = std::chrono::seconds{10};
  app->logger_ = std::make_unique<sourcery::logger>(std::move(config.log));
  app->slow_command_ = config.slow_command;
  app->observer_ = [m = &app->metrics_, log = app->logger_.get()](const supervision::supervisor_report& r) {
    m->supervisor_event(r);
    log_supervisor_report(*log, r);
  };
  root_flags.observer = app->observer_;
  auto root = supervision::supervisor::start(*app->system_, root_flags, {});
  if (!root)
    return root.error();
  app->root_.emplace(*root);
  app->on_failure_ = std::move(config.on_failure);
  app->deadlines_ = std::make_unique<detail::dispatch_deadlines>();
  // A tree that gives up must not leave a process that looks healthy.
  caf::actor_cast<caf::abstract_actor*>(root->handle())->attach_functor([a = app.get()](const caf::error& reason) {
    a->tree_down(reason);
  });
  app->router_ = std::move(routes);
  app->middleware_ = std::move(middleware);
  if (auto err = app->host_aggregates())
    return err;
  if (!shared_store)
    app->store_->use_registry(&app->types_);
  app->read_model_dir_ = config.read_model_dir;
  if (app->read_model_dir_.empty() && !config.in_memory && !shared_store && !app->store_uri_)
    app->read_model_dir_ = (std::filesystem::path{config.data_dir} / "read-models").string();
  app->durability_ = config.durability;
  app->watching_ = true;
  // The head as of now, read here rather than in the thread: an event
  // committed before the thread runs must still count as new.
  app->head_watcher_ = std::thread{[a = app.get(), seen = app->store_->head_position()] { a->watch_head(seen); }};
  app->health_watcher_ = std::thread{[a = app.get()] { a->watch_store_health(); }};
  return app;
}

// -- event handlers -----------------------------------------------------------

/// A strong dispatch waiting for its handlers: answered once, by the last
/// handler to get there, the first to fail, the deadline, or the stop.
struct application::strong_wait {
  std::mutex mtx;
  bool answered = false;
  size_t left = 0;
  std::chrono::steady_clock::time_point deadline;
  dispatch_result result;
  std::function<void(caf::expected<dispatch_result>)> done;
  std::vector<std::shared_ptr<handler_status>> handlers;

  void fail(const std::string& why) {
    std::function<void(caf::expected<dispatch_result>)> f;
    {
      std::lock_guard guard{mtx};
      if (answered)
        return;
      answered = true;
      f = std::move(done);
    }
    auto stored = "the events were stored (positions " + std::to_string(result.first_position) + ".."
                  + std::to_string(result.last_position) + ") but ";
    // A handler that cannot write (a full disk) is the cause to report: the
    // caller (HTTP: 507) learns what to fix, not only that it waited.
    for (auto& h : handlers)
      if (auto trouble = h->storage_trouble(); trouble && h->position() < result.last_position) {
        auto code = persistence::code_of(trouble);
        f(persistence::make_error(code == persistence::store_errc::none ? persistence::store_errc::io_error : code,
                                  stored + h->name() + " cannot store its progress: " + describe_error(trouble)));
        return;
      }
    f(make_error(dispatch_errc::consistency_timeout, stored + why));
  }

  void reached() {
    std::function<void(caf::expected<dispatch_result>)> f;
    {
      std::lock_guard guard{mtx};
      if (answered || --left > 0)
        return;
      answered = true;
      f = std::move(done);
    }
    f(std::move(result));
  }

  bool settled() {
    std::lock_guard guard{mtx};
    return answered;
  }
};

caf::error application::reserve_handler(std::shared_ptr<handler_status> status, bool strong,
                                        checkpoint_reader checkpoint) {
  std::lock_guard guard{handlers_mtx_};
  if (handlers_.count(status->name()) != 0)
    return make_error(dispatch_errc::invalid_route, "a handler named " + status->name() + " is already running");
  auto name = status->name();
  handlers_[name] = handler_entry{std::move(status), strong, {}, std::move(checkpoint), {}, {}, {}};
  return {};
}

void application::run_once(const std::string& name, supervision::child_spec spec) {
  auto id = spec.id;
  cluster_->add_consumer(
    name,
    [this, spec = std::move(spec)]() -> caf::error {
      auto r = root_->start_child(spec);
      return r ? caf::error{} : r.error();
    },
    [this, name, id] {
      (void) root_->terminate_child(id);
      (void) root_->delete_child(id);
      std::lock_guard guard{handlers_mtx_};
      if (auto i = handlers_.find(name); i != handlers_.end())
        i->second.actor = nullptr;
    });
}

void application::follow_remote_handlers() {
  std::vector<std::pair<std::shared_ptr<handler_status>, checkpoint_reader>> remote;
  {
    std::lock_guard guard{handlers_mtx_};
    for (auto& [name, h] : handlers_)
      if (h.strong && h.checkpoint && !cluster_->runs_here(name))
        remote.emplace_back(h.status, h.checkpoint);
  }
  for (auto& [status, read] : remote)
    if (auto pos = read(); pos && *pos)
      status->advance(**pos);
}

void application::forget_handler(const std::string& name) {
  std::lock_guard guard{handlers_mtx_};
  handlers_.erase(name);
}

void application::set_handler_child(const std::string& name, const std::string& child_id) {
  auto kind = child_id.substr(0, child_id.find(':'));
  std::lock_guard guard{handlers_mtx_};
  if (auto i = handlers_.find(name); i != handlers_.end()) {
    i->second.child_id = child_id;
    i->second.kind = kind == "process" ? "process manager" : kind;
  }
}

std::vector<application::handler_report> application::handler_reports() const {
  std::vector<handler_report> out;
  std::lock_guard guard{handlers_mtx_};
  for (auto& [name, entry] : handlers_) {
    handler_report r;
    r.name = name;
    r.kind = entry.kind;
    r.position = entry.status->position();
    if (auto why = entry.status->stopped()) {
      r.state = "stopped";
      r.reason = describe_error(why);
    } else if (auto trouble = entry.status->storage_trouble()) {
      r.state = "retrying";
      r.reason = describe_error(trouble);
    } else if (cluster_ && !entry.actor) {
      r.state = "elsewhere";
    } else {
      r.state = "running";
    }
    out.push_back(std::move(r));
  }
  return out;
}

caf::error application::store_health() const {
  return store_ ? store_->health() : caf::error{};
}

void application::handler_started(const std::string& name, const caf::actor& actor) {
  std::lock_guard guard{handlers_mtx_};
  if (auto i = handlers_.find(name); i != handlers_.end())
    i->second.actor = actor;
}

caf::expected<persistence::projection_store*> application::read_models() {
  std::lock_guard guard{handlers_mtx_};
  if (read_models_)
    return read_models_.get();
  if (store_uri_ && read_model_dir_.empty()) {
    // Read models follow the store: beside the events in PostgreSQL.
    persistence::store_open_options opts;
    opts.mode = durability_;
    auto models = persistence::open_read_models(*store_uri_, opts);
    if (!models)
      return models.error();
    if (cluster_)
      if (auto err = (*models)->fence_writes(cluster_->fence()))
        return err;
    read_models_ = std::move(*models);
    return read_models_.get();
  }
  persistence::projection_store_options opts;
  opts.mode = durability_;
  if (read_model_dir_.empty()) {
    // An in-memory application's read models live as long as it does.
    auto dir = std::filesystem::temp_directory_path() / ("sourcery-read-models-" + persistence::uuid::random().to_string());
    read_model_dir_ = dir.string();
    read_models_temporary_ = true;
    opts.mode = persistence::durability::no_sync;
  }
  opts.path = read_model_dir_;
  auto models = persistence::projection_store::open(opts);
  if (!models)
    return models.error();
  read_models_ = std::move(*models);
  return read_models_.get();
}

caf::error application::rebuild_projection(const std::string& name) {
  std::shared_ptr<handler_status> status;
  std::function<caf::error()> rebuild;
  std::string id;
  {
    std::lock_guard guard{handlers_mtx_};
    auto i = handlers_.find(name);
    if (i == handlers_.end() || !read_models_ || !i->second.rebuild)
      return make_error(dispatch_errc::invalid_route, "no projection is named " + name);
    status = i->second.status;
    rebuild = i->second.rebuild;
    id = i->second.child_id;
  }
  (void) root_->terminate_child(id); // in a cluster it may run elsewhere
  auto err = rebuild();
  status->rewind();
  if (auto r = root_->restart_child(id); !r && !cluster_)
    return r.error();
  return err;
}

std::shared_ptr<handler_status> application::handler(const std::string& name) const {
  std::lock_guard guard{handlers_mtx_};
  auto i = handlers_.find(name);
  return i == handlers_.end() ? nullptr : i->second.status;
}

void application::watch_head(uint64_t seen) {
  while (watching_.load()) {
    bool anyone;
    {
      std::scoped_lock guard{handlers_mtx_, strong_mtx_};
      anyone = !handlers_.empty() || !strong_waits_.empty();
    }
    bool waiting = false;
    if (cluster_) {
      std::lock_guard guard{strong_mtx_};
      waiting = !strong_waits_.empty();
    }
    // Without handlers nobody needs waking: do not wake up on every commit.
    // Strong dispatches waiting for handlers on other nodes: their
    // checkpoints are read every few milliseconds.
    auto period = std::chrono::milliseconds{waiting ? 3 : 20};
    if (anyone)
      store_->wait_for_position(seen + 1, period);
    else
      std::this_thread::sleep_for(period);
    if (waiting)
      follow_remote_handlers();
    uint64_t head = store_->head_position();
    if (head > seen) {
      seen = head;
      std::lock_guard guard{handlers_mtx_};
      for (auto& [name, h] : handlers_)
        if (h.actor)
          caf::anon_send(h.actor, detail::head_atom::value, head);
    }
    std::vector<std::shared_ptr<strong_wait>> expired;
    {
      auto now = std::chrono::steady_clock::now();
      std::lock_guard guard{strong_mtx_};
      auto keep = std::partition(strong_waits_.begin(), strong_waits_.end(), [&](const auto& w) {
        return !w->settled() && w->deadline > now;
      });
      std::move(keep, strong_waits_.end(), std::back_inserter(expired));
      strong_waits_.erase(keep, strong_waits_.end());
    }
    for (auto& w : expired)
      w->fail("the handlers did not handle them within the consistency timeout");
  }
}

void application::watch_store_health() {
  // A thread of its own: the head watcher may wait on the store itself.
  // Said once when the store goes, once when it is back.
  std::optional<std::chrono::steady_clock::time_point> down_since;
  std::unique_lock guard{health_mtx_};
  for (unsigned round = 1; watching_.load(); ++round) {
    health_cv_.wait_for(guard, std::chrono::milliseconds{200});
    if (round % 5 == 0 && watching_.load()) {
      // Operators' requests, once a second (off the lock: they may wait on the store).
      guard.unlock();
      operate_handlers();
      guard.lock();
    }
    auto trouble = store_->health(); // never blocks
    auto now = std::chrono::steady_clock::now();
    if (trouble && !down_since) {
      down_since = now;
      logger_->error("store", "the store is unavailable: commands fail until it is back",
                     {{"reason", describe_error(trouble)}});
    } else if (!trouble && down_since) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - *down_since).count();
      down_since.reset();
      logger_->info("store", "the store is back", {{"unavailable_ms", std::to_string(ms)}});
    }
  }
}

void application::tree_down(const caf::error& reason) {
  if (stopped_.load())
    return; // our own stop
  fail(make_error(dispatch_errc::unavailable,
                  "the application's supervision tree gave up after repeated failures ("
                    + (reason ? describe_error(reason) : std::string{"normal exit"}) + ")"),
       "supervision tree died; the application is down until restarted");
}

void application::fail(caf::error why, std::string_view log_message) {
  {
    std::lock_guard guard{failure_mtx_};
    if (failed_.exchange(true))
      return;
    failure_ = why;
  }
  failure_cv_.notify_all();
  logger_->error("application", log_message, {{"reason", describe_error(why)}});
  if (on_failure_) {
    try {
      on_failure_(why);
    } catch (const std::exception& e) {
      logger_->error("application", "on_failure threw", {{"error", e.what()}});
    }
  }
}

caf::error application::failure() const {
  std::lock_guard guard{failure_mtx_};
  return failure_;
}

caf::error application::outage() const {
  {
    std::lock_guard guard{failure_mtx_};
    if (outage_)
      return outage_;
  }
  // Not yet told, but its last renewal is older than its lease: paused, or
  // cut off from the store (its membership's thread says so at its next run).
  if (cluster_ && !cluster_->current() && running())
    return make_error(dispatch_errc::unavailable, "node " + cluster_->node()
                                                    + " has not renewed its membership within its lease's life");
  return {};
}

caf::error application::await_failure(std::chrono::milliseconds timeout) {
  std::unique_lock guard{failure_mtx_};
  auto done = [this] { return failed_.load() || stopped_.load(); };
  if (timeout == std::chrono::milliseconds::max())
    failure_cv_.wait(guard, done);
  else
    failure_cv_.wait_for(guard, timeout, done);
  return failure_;
}

caf::error application::late_timeout(std::chrono::milliseconds waited) {
  auto err = make_error(dispatch_errc::timeout, "no answer within " + std::to_string(waited.count()) + " ms");
  metrics_.command_done(err, waited);
  return err;
}

void application::finish(std::chrono::steady_clock::time_point t0, caf::expected<dispatch_result> r,
                         const std::function<void(caf::expected<dispatch_result>)>& done,
                         const dispatch_context* ctx) {
  auto took = std::chrono::steady_clock::now() - t0;
  metrics_.command_done(r, took);
  if (took >= slow_command_ && logger_->enabled(log_level::warn, "dispatch")) {
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(took).count();
    logger_->warn("dispatch", "slow command",
                  {{"command", ctx != nullptr ? ctx->command_name : std::string{"?"}},
                   {"aggregate", ctx != nullptr ? ctx->aggregate_id : std::string{}},
                   {"duration_ms", static_cast<double>(micros) / 1000.0},
                   {"outcome", !r ? describe_error(r.error()) : r->accepted ? "accepted" : "rejected"}});
  }
  // The caller's code runs on our threads (actors, the deadline thread): its
  // bug must not take an actor, and with it the tree, down.
  std::string what;
  try {
    done(std::move(r));
    return;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "a non-standard exception";
  }
  logger_->error("dispatch", "a dispatch callback threw",
                 {{"command", ctx != nullptr ? ctx->command_name : std::string{"?"}}, {"error", what}});
}

void application::watch_failures(error_policy& policy) {
  policy.observer = [log = logger_.get(), theirs = std::move(policy.observer)](const handler_failure& f) {
    auto level = f.action.what == error_action::kind::retry ? log_level::warn : log_level::error;
    if (log->enabled(level, "handler"))
      log->log(level, "handler", "event failed",
               {{"handler", f.handler},
                {"position", f.event.position},
                {"stream", f.event.stream_id},
                {"type", f.event.type},
                {"failures", f.failures},
                {"decision", decision_of(f.action)},
                {"retry_in_ms", f.action.what == error_action::kind::retry ? f.action.delay.count() : 0},
                {"error", describe_error(f.error)}});
    if (theirs)
      theirs(f);
  };
  policy.storage_observer = [log = logger_.get(), theirs = std::move(policy.storage_observer)](
                              const std::string& handler, const caf::error& err, uint32_t failures,
                              std::chrono::milliseconds retry_in) {
    if (log->enabled(log_level::warn, "handler"))
      log->warn("handler", "storage failed; retrying",
                {{"handler", handler}, {"failures", failures}, {"retry_in_ms", retry_in.count()},
                 {"error", describe_error(err)}});
    if (theirs)
      theirs(handler, err, failures, retry_in);
  };
}

void application::complete_strong(const std::shared_ptr<dispatch_options>& opts, caf::expected<dispatch_result> r,
                                  std::function<void(caf::expected<dispatch_result>)> done,
                                  std::chrono::steady_clock::time_point t0, std::shared_ptr<const dispatch_context> ctx) {
  if (!r || !r->accepted || r->last_position == 0 || opts->consistency_level != consistency::strong)
    return finish(t0, std::move(r), done, ctx.get());
  std::vector<std::shared_ptr<handler_status>> statuses;
  std::string unknown; // a handler named in `consistent_with` that does not run
  {
    std::lock_guard guard{handlers_mtx_};
    if (opts->consistent_with.empty()) {
      for (auto& [name, h] : handlers_)
        if (h.strong)
          statuses.push_back(h.status);
    } else {
      for (auto& name : opts->consistent_with) {
        auto i = handlers_.find(name);
        if (i == handlers_.end()) {
          unknown = name;
          break;
        }
        statuses.push_back(i->second.status);
      }
    }
  }
  // The caller's code runs outside our locks.
  if (!unknown.empty())
    return finish(t0,
                  make_error(dispatch_errc::consistency_timeout,
                             "the events were stored but no handler is named " + unknown),
                  done, ctx.get());
  if (statuses.empty())
    return finish(t0, std::move(r), done, ctx.get());
  auto wait = std::make_shared<strong_wait>();
  wait->left = statuses.size();
  wait->deadline = std::chrono::steady_clock::now() + opts->consistency_timeout;
  wait->result = std::move(*r);
  wait->handlers = statuses;
  wait->done = [this, t0, ctx, done = std::move(done)](caf::expected<dispatch_result> answer) {
    finish(t0, std::move(answer), done, ctx.get());
  };
  {
    std::lock_guard guard{strong_mtx_};
    strong_waits_.push_back(wait);
  }
  uint64_t pos = wait->result.last_position;
  for (auto& s : statuses)
    s->when_reached(pos, [wait, name = s->name()](caf::error err) {
      if (err)
        wait->fail("handler " + name + " has stopped: " + describe_error(err));
      else
        wait->reached();
    });
}

caf::error application::host_aggregates() {
  if (cluster_settings_.name.empty()) {
    registration_ = make_local_registration(*system_, *root_, observer_);
  } else {
    // Out of the cluster is an outage, not a failure: the node joins again.
    auto on_down = [this](const caf::error& why) {
      std::lock_guard guard{failure_mtx_};
      outage_ = why;
    };
    auto on_rejoined = [this] {
      std::lock_guard guard{failure_mtx_};
      outage_ = caf::error{};
    };
    auto on_replaced = [this](const caf::error& why) {
      fail(why, "another process joined the cluster as this node; this one stops");
    };
    auto created = cluster::detail::cluster_registration::create({*system_, *root_, observer_, *logger_, *store_,
                                                                  coordination_, cluster_settings_, std::move(on_down),
                                                                  std::move(on_rejoined), std::move(on_replaced)});
    if (!created)
      return created.error();
    cluster_ = created->get();
    registration_ = std::move(*created);
  }
  std::vector<std::string> prefixes;
  for (const auto& [name, decl] : router_.aggregates())
    prefixes.push_back(decl.prefix);
  prefixes_ = stream_prefixes{std::move(prefixes)};
  for (const auto& [name, decl] : router_.aggregates()) {
    if (auto err = decl.register_events(types_))
      return err;
    auto host = decl.make_host(decl.settings, *store_, types_);
    for (const auto& [command, route] : router_.commands())
      if (route.aggregate_name == name)
        route.install(*host);
    if (auto err = registration_->host(*host))
      return err;
    hosts_.emplace(name, std::move(host));
  }
  for (const auto& [command, route] : router_.commands())
    routes_.emplace(command, resolved_route{&route, &router_.aggregates().at(route.aggregate_name).settings});
  if (cluster_)
    return cluster_->join(); // every type is hosted: peers may send commands now
  return {};
}

application::~application() {
  stop();
}

void application::stop() {
  if (stopped_.exchange(true))
    return;
  if (cluster_)
    cluster_->leave(); // hand the shards over while everything still runs
  {
    std::lock_guard guard{failure_mtx_}; // wakes await_failure
  }
  failure_cv_.notify_all();
  {
    std::lock_guard guard{health_mtx_};
    watching_ = false;
  }
  health_cv_.notify_all();
  if (head_watcher_.joinable())
    head_watcher_.join();
  if (health_watcher_.joinable())
    health_watcher_.join();
  std::vector<std::shared_ptr<strong_wait>> waits;
  {
    std::lock_guard guard{strong_mtx_};
    waits.swap(strong_waits_);
  }
  for (auto& w : waits) // callers' code, outside our locks
    w->fail("the application stopped first");
  if (root_)
    root_->stop();
  root_.reset();
  {
    // Our handles would keep detached actors (and their threads) alive.
    std::lock_guard guard{handlers_mtx_};
    for (auto& [name, h] : handlers_)
      h.actor = nullptr;
  }
  // The hosts after their actors (the tree), which point to them.
  cluster_ = nullptr;
  registration_.reset();
  hosts_.clear();
  // The store before the actor system: its writer answers what is still in
  // flight (to actors that are gone: dropped) while the system still exists.
  store_.reset();
  system_.reset();
  deadlines_.reset(); // after the actors: none adds a deadline any more
  read_models_.reset();
  if (read_models_temporary_) {
    std::error_code ec;
    std::filesystem::remove_all(read_model_dir_, ec);
  }
}

std::chrono::milliseconds application::submit(const typed_command& cmd, dispatch_options options, reply done) {
  const auto t0 = std::chrono::steady_clock::now();
  auto budget = options.timeout.value_or(std::chrono::milliseconds{5000});
  if (stopped_.load()) {
    finish(t0, make_error(dispatch_errc::stopped, "the application has stopped"), done);
    return budget;
  }
  if (failed_.load()) {
    finish(t0, failure(), done);
    return budget;
  }
  auto found = routes_.find(cmd.name);
  if (found == routes_.end() || found->second.route->type != cmd.type) {
    finish(t0, make_error(dispatch_errc::unregistered_command,
                          found == routes_.end() ? "no route for command " + cmd.name
                                                 : "the route named " + cmd.name + " is another C++ type's"),
           done);
    return budget;
  }
  const auto& route = *found->second.route;
  const auto& settings = *found->second.settings;
  auto id = route.identity(cmd.command);
  if (id.empty()) {
    finish(t0, make_error(dispatch_errc::invalid_identity, route.command_name + " names no aggregate: its identity is empty"),
           done);
    return budget;
  }
  // Options and context live until the answer: after-hooks see them too.
  auto opts = std::make_shared<dispatch_options>(std::move(options));
  if (!opts->timeout)
    opts->timeout = settings.timeout;
  if (!opts->consistency_level)
    opts->consistency_level = settings.consistency_level;
  if (opts->correlation_id.empty())
    opts->correlation_id = persistence::uuid::random().to_string();
  const auto timeout = *opts->timeout;
  budget = timeout + (*opts->consistency_level == consistency::strong ? opts->consistency_timeout
                                                                        : std::chrono::milliseconds{0});
  auto ctx = std::make_shared<dispatch_context>(
    dispatch_context{cmd.type, route.command_name, route.prefix + id, cmd.command, *opts});
  for (auto& m : middleware_) {
    if (auto err = m->before_dispatch(*ctx)) {
      for (auto i = middleware_.rbegin(); i != middleware_.rend(); ++i)
        (*i)->after_failure(*ctx, err);
      finish(t0, std::move(err), done, ctx.get());
      return budget;
    }
  }
  command_envelope envelope;
  envelope.aggregate_type = route.aggregate_name;
  envelope.stream_id = ctx->aggregate_id;
  envelope.command_type = route.command_name;
  envelope.payload = route.encode(cmd.command);
  envelope.metadata = opts->metadata.encode();
  envelope.causation_id = opts->causation_id;
  envelope.correlation_id = opts->correlation_id;
  envelope.returns = opts->returns;
  envelope.deadline = detail::dispatch_deadlines::due(t0, timeout);
  ctx->command = nullptr; // the command object does not outlive this call
  // Answered once: by the aggregate, or by the deadline (then the late
  // answer is dropped). Both paths run the after-hooks.
  auto answer = std::make_shared<reply>(std::move(done));
  auto after = [this, ctx](const caf::expected<dispatch_result>& r) {
    for (auto i = middleware_.rbegin(); i != middleware_.rend(); ++i) {
      if (r)
        (*i)->after_dispatch(*ctx, *r);
      else
        (*i)->after_failure(*ctx, r.error());
    }
  };
  auto ticket = deadlines_->add(t0, timeout, [this, ctx, t0, timeout, answer, after] {
    caf::expected<dispatch_result> r = make_error(
      dispatch_errc::timeout, ctx->command_name + " to " + ctx->aggregate_id + ": no answer within "
                                + std::to_string(timeout.count()) + " ms (it may still complete)");
    after(r);
    finish(t0, std::move(r), *answer, ctx.get());
  });
  registration_->route(std::move(envelope), [this, ctx, opts, t0, answer, after, ticket](caf::expected<dispatch_result> r) {
    if (!deadlines_->settle(ticket))
      return; // answered `timeout` already
    if (r)
      r->aggregate_id = ctx->aggregate_id;
    after(r);
    complete_strong(opts, std::move(r), std::move(*answer), t0, ctx);
  });
  return budget;
}

std::string application::cluster_node() const {
  return cluster_ ? cluster_->node() : std::string{};
}

size_t application::cluster_members() const {
  return cluster_ ? cluster_->members() : 0;
}

size_t application::shards_owned() const {
  return cluster_ ? cluster_->shards_owned() : 0;
}

std::string application::metrics_text() const {
  std::string out;
  metrics_.render(out);
  if (cluster_) {
    auto& c = cluster_->counters();
    auto gauge = [&](const char* name, const char* help, const char* type, uint64_t v) {
      out += std::string{"# HELP "} + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " "
             + std::to_string(v) + "\n";
    };
    gauge("sourcery_cluster_members", "Live members of the cluster, as this node sees them.", "gauge",
          cluster_->members());
    gauge("sourcery_cluster_shards_owned", "Shards this node serves now.", "gauge", cluster_->shards_owned());
    gauge("sourcery_cluster_commands_forwarded_total", "Commands sent to the node owning their aggregate.",
          "counter", c.forwarded.load());
    gauge("sourcery_cluster_commands_served_total", "Commands other nodes sent here.", "counter", c.served.load());
    gauge("sourcery_cluster_commands_rerouted_total", "Commands routed again (shard moving, moved, fenced).",
          "counter", c.rerouted.load());
    gauge("sourcery_cluster_shards_acquired_total", "Shards this node took.", "counter", c.acquired.load());
    gauge("sourcery_cluster_handoffs_total", "Shards this node handed over cleanly.", "counter",
          c.handed_over.load());
    gauge("sourcery_cluster_shards_lost_total", "Shards whose lease ran out under this node.", "counter",
          c.lost.load());
  }
  auto head = store_ ? store_->head_position() : 0; // none once stopped
  out += "# HELP sourcery_head_position The last position of $all.\n# TYPE sourcery_head_position gauge\n";
  out += "sourcery_head_position " + std::to_string(head) + "\n";
  out += "# HELP sourcery_handler_lag_events Events of $all past a handler's checkpoint.\n"
         "# TYPE sourcery_handler_lag_events gauge\n";
  // A label value escapes backslash, double quote and newline (the text
  // format's rule); handler names are the application's.
  auto label = [](const std::string& v) {
    std::string e;
    for (char c : v)
      e += c == '\\' ? "\\\\" : c == '"' ? "\\\"" : c == '\n' ? "\\n" : std::string(1, c);
    return e;
  };
  auto reports = handler_reports();
  for (auto& r : reports)
    out += "sourcery_handler_lag_events{handler=\"" + label(r.name) + "\"} "
           + std::to_string(head > r.position ? head - r.position : 0) + "\n";
  out += "# HELP sourcery_handler_up Whether a handler runs (1), or has stopped on an event or retries its"
         " storage (0).\n# TYPE sourcery_handler_up gauge\n";
  for (auto& r : reports)
    out += "sourcery_handler_up{handler=\"" + label(r.name) + "\",state=\"" + r.state + "\"} "
           + (r.state == "running" || r.state == "elsewhere" ? "1" : "0") + "\n";
  auto trouble = store_health();
  out += "# HELP sourcery_store_up Whether the store answers (0 while it cannot be reached or does not"
         " answer).\n# TYPE sourcery_store_up gauge\nsourcery_store_up ";
  out += trouble ? "0\n" : "1\n";
  return out;
}

} // namespace sourcery
