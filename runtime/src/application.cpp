#include "sourcery/runtime/application.hpp"

#include <thread>

#include "sourcery/persistence/memory_store.hpp"
#include "sourcery/persistence/uuid.hpp"

namespace sourcery {

caf::expected<std::unique_ptr<application>> application::start(application_config config, router routes,
                                                               std::vector<std::shared_ptr<middleware>> middleware,
                                                               std::unordered_map<std::type_index, aggregate_settings> settings) {
  if (!routes.conflicts().empty())
    return make_error(dispatch_errc::invalid_route, routes.conflicts().front());
  std::unique_ptr<application> app{new application};
  const bool shared_store = config.store != nullptr;
  if (shared_store) {
    app->store_ = std::move(config.store);
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
  app->system_ = std::make_unique<caf::actor_system>(app->cfg_);
  supervision::supervisor_flags root_flags;
  root_flags.name = "app_root";
  root_flags.intensity = 10;
  root_flags.period = std::chrono::seconds{10};
  auto root = supervision::supervisor::start(*app->system_, root_flags, {});
  if (!root)
    return root.error();
  app->root_.emplace(*root);
  app->router_ = std::move(routes);
  app->middleware_ = std::move(middleware);
  app->core_.system = app->system_.get();
  app->core_.store = app->store_.get();
  app->core_.root = &*app->root_;
  app->core_.settings = std::move(settings);
  for (auto& [type, e] : app->router_.routes())
    if (auto err = e.setup(app->core_))
      return err;
  if (!shared_store)
    app->store_->use_registry(&app->core_.types);
  return app;
}

application::~application() {
  stop();
}

void application::stop() {
  if (stopped_.exchange(true))
    return;
  if (root_)
    root_->stop();
  root_.reset();
  core_.aggregates.clear();
  system_.reset();
  store_.reset();
}

void application::dispatch_erased(std::type_index type, const void* cmd, dispatch_options options,
                                  std::function<void(caf::expected<dispatch_result>)> done) {
  if (stopped_.load())
    return done(make_error(dispatch_errc::stopped, "the application has stopped"));
  auto route = router_.routes().find(type);
  if (route == router_.routes().end())
    return done(make_error(dispatch_errc::unregistered_command, "no route for command " + demangled_name(type.name())));
  // Options and context live until the answer: after-hooks see them too.
  auto opts = std::make_shared<dispatch_options>(std::move(options));
  if (opts->correlation_id.empty())
    opts->correlation_id = persistence::uuid::random().to_string();
  auto ctx = std::make_shared<dispatch_context>(
    dispatch_context{type, route->second.command_name, route->second.identity(cmd), cmd, *opts});
  for (auto& m : middleware_) {
    if (auto err = m->before_dispatch(*ctx)) {
      for (auto i = middleware_.rbegin(); i != middleware_.rend(); ++i)
        (*i)->after_failure(*ctx, err);
      return done(std::move(err));
    }
  }
  ctx->command = nullptr; // the command object does not outlive this call
  route->second.send(core_, ctx->aggregate_id, cmd, *opts,
                     [this, ctx, opts, done = std::move(done)](caf::expected<dispatch_result> r) {
                       for (auto i = middleware_.rbegin(); i != middleware_.rend(); ++i) {
                         if (r)
                           (*i)->after_dispatch(*ctx, *r);
                         else
                           (*i)->after_failure(*ctx, r.error());
                       }
                       done(std::move(r));
                     });
}

} // namespace sourcery
