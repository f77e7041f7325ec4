// The application's life: it opens its store, starts its actor system, root
// supervisor and registration, and stops them in order; it fails for good
// when its tree gives up, and reports outages its registration heals.

#include "sourcery/runtime/application.hpp"

#include <filesystem>
#include <thread>

#include "../commands/dispatch_deadlines.hpp"
#include "sourcery/persistence/personal.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/supervision/detail/scoped_self.hpp"
#include "strong_wait.hpp"

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

} // namespace

application::application() = default;

caf::expected<std::unique_ptr<application>> application::start(application_config config, router routes,
                                                               std::vector<std::shared_ptr<middleware>> middleware) {
  if (!routes.conflicts().empty())
    return make_error(dispatch_errc::invalid_route, routes.conflicts().front());
  std::unique_ptr<application> app{new application};
  const bool shared_store = config.store != nullptr;
  if (shared_store) {
    app->store_ = std::move(config.store);
  } else {
    // Every store opens through its URI; the shorthands name one too.
    persistence::store_uri uri = config.in_memory ? persistence::store_uri::memory()
                                                  : persistence::store_uri::lmdb(config.data_dir);
    if (!config.store_uri.empty()) {
      auto parsed = persistence::store_uri::parse(config.store_uri);
      if (!parsed)
        return parsed.error();
      uri = std::move(*parsed);
    }
    if (uri.type == persistence::store_uri::kind::memory)
      config.in_memory = true;
    else if (uri.type == persistence::store_uri::kind::lmdb)
      config.data_dir = uri.location;
    else
      app->store_uri_ = uri;
    persistence::store_open_options opts;
    opts.mode = config.durability;
    opts.master_key_file = config.master_key_file;
    opts.create = config.create_store;
    auto store = persistence::open_store(uri, opts);
    if (!store)
      return store.error();
    app->store_ = std::move(*store);
  }
  app->cfg_.set("logger.verbosity", caf::atom("quiet"));
  int threads = config.scheduler_threads > 0 ? config.scheduler_threads
                                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app->cfg_.set("scheduler.max-threads", threads);
  app->provider_ = config.registration ? std::move(config.registration) : local_registration_provider();
  app->provider_->configure(app->cfg_);
  if (config.configure_actors)
    config.configure_actors(app->cfg_);
  app->system_ = std::make_unique<caf::actor_system>(app->cfg_);
  // Whatever thread stops this application, it must not wait for this one
  // (scoped_self.hpp).
  detail::release_thread_logger();
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
  // The application reads personal data; the operator's tools do not.
  app->store_->reveal_personal_data();
  if (auto err = app->types_.add<subject_forgotten>(subject_forgotten::type_name))
    return err;
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

caf::error application::host_aggregates() {
  // Out of service for a while is an outage, not a failure: it heals.
  auto on_outage = [this](const caf::error& why) {
    std::lock_guard guard{failure_mtx_};
    outage_ = why;
  };
  auto on_recovered = [this] {
    std::lock_guard guard{failure_mtx_};
    outage_ = caf::error{};
  };
  auto on_failure = [this](const caf::error& why) {
    fail(why, "another process took this one's place; this one stops");
  };
  auto created = provider_->create({*system_, *root_, observer_, *logger_, *store_, store_uri_, std::move(on_outage),
                                    std::move(on_recovered), std::move(on_failure)});
  if (!created)
    return created.error();
  registration_ = std::move(*created);
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
  return registration_->start(); // every type is hosted: commands may come from elsewhere now
}

application::~application() {
  stop();
}

void application::stop() {
  if (stopped_.exchange(true))
    return;
  if (registration_)
    registration_->stop(); // hands what runs here over while everything still runs
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

caf::error application::store_health() const {
  return store_ ? store_->health() : caf::error{};
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
  // Not yet told: what the registration sees itself.
  return running() && registration_ ? registration_->outage() : caf::error{};
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

registration_description application::placement() const {
  return registration_ && !stopped_.load() ? registration_->describe() : registration_description{};
}

} // namespace sourcery
