// The application's consumers -- event handlers, projections, process
// managers -- by name: registered once, run where the registration says,
// reported to operators, their failures logged, projections rebuilt.

#include "sourcery/runtime/application.hpp"

#include <filesystem>

#include "sourcery/persistence/uuid.hpp"

namespace sourcery {

namespace {

const char* decision_of(const error_action& a) {
  switch (a.what) {
    case error_action::kind::retry: return "retry";
    case error_action::kind::skip: return "skip";
    case error_action::kind::stop: return "stop";
  }
  return "stop";
}

} // namespace

caf::error application::reserve_handler(std::shared_ptr<handler_status> status, bool strong,
                                        checkpoint_reader checkpoint) {
  std::lock_guard guard{handlers_mtx_};
  if (handlers_.count(status->name()) != 0)
    return make_error(dispatch_errc::invalid_route, "a handler named " + status->name() + " is already running");
  auto name = status->name();
  handlers_[name] = handler_entry{std::move(status), strong, {}, std::move(checkpoint), {}, {}, {}};
  return {};
}

caf::error application::run_consumer(const std::string& name, supervision::child_spec spec) {
  auto id = spec.id;
  return registration_->run_once(
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

bool application::follow_remote_handlers() {
  std::vector<std::pair<std::shared_ptr<handler_status>, checkpoint_reader>> remote;
  {
    std::lock_guard guard{handlers_mtx_};
    for (auto& [name, h] : handlers_)
      if (h.strong && h.checkpoint && !registration_->runs_here(name))
        remote.emplace_back(h.status, h.checkpoint);
  }
  for (auto& [status, read] : remote)
    if (auto pos = read(); pos && *pos)
      status->advance(**pos);
  return !remote.empty();
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
    } else if (!entry.actor && registration_ && !registration_->runs_here(name)) { // none once stopped
      r.state = "elsewhere";
    } else {
      r.state = "running";
    }
    out.push_back(std::move(r));
  }
  return out;
}

void application::handler_started(const std::string& name, const caf::actor& actor) {
  {
    std::lock_guard guard{handlers_mtx_};
    auto i = handlers_.find(name);
    if (i == handlers_.end())
      return;
    i->second.actor = actor;
  }
  // The head as of now: an event committed while it restarted was
  // announced to the actor it replaces (or to none), and the new one's
  // first read may have come before that commit -- it would wait for the
  // next event. Past this, the watcher announces every head to it.
  caf::anon_send(actor, detail::head_atom::value, store_->head_position());
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
    if (auto fence = registration_ ? registration_->fence() : nullptr)
      if (auto err = (*models)->fence_writes(std::move(fence)))
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
  // It may run in another process (then not here, and not restarted here).
  const bool here = !registration_ || registration_->runs_here(name);
  (void) root_->terminate_child(id);
  auto err = rebuild();
  status->rewind();
  if (auto r = root_->restart_child(id); !r && here)
    return r.error();
  return err;
}

std::shared_ptr<handler_status> application::handler(const std::string& name) const {
  std::lock_guard guard{handlers_mtx_};
  auto i = handlers_.find(name);
  return i == handlers_.end() ? nullptr : i->second.status;
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

} // namespace sourcery
