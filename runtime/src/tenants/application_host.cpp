// The tenants of one process: an application each, started on first use,
// stopped on the sweeper's thread once closed and unused (never on a
// thread of the tenant's own actors, which its stop would wait for).

#include "sourcery/runtime/tenants/application_host.hpp"

#include <algorithm>
#include <filesystem>

#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/store_uri.hpp"

namespace sourcery {

namespace {

persistence::store_uri parsed_root(const std::string& text) {
  return *persistence::store_uri::parse(text); // checked by start
}

caf::error no_tenant(const std::string& name) {
  return persistence::make_error(persistence::store_errc::no_store, "no tenant '" + name + "'");
}

} // namespace

/// A tenant being opened (`opening`: by the thread that started it; others
/// wait on the host's condition), then open.
struct application_host::slot {
  bool opening = true;
  caf::error failed;
  std::shared_ptr<sourcery::tenant> open;
};

tenant::~tenant() {
  if (app_)
    app_->stop();
}

bool application_host::valid_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 40)
    return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

caf::expected<std::unique_ptr<application_host>> application_host::start(application_host_config config) {
  if (!config.routes)
    return persistence::make_error(persistence::store_errc::invalid_argument, "tenants need routes");
  auto root = persistence::store_uri::parse(config.store);
  if (!root)
    return root.error();
  std::unique_ptr<application_host> host{new application_host{std::move(config)}};
  if (host->cfg_.base.registration) {
    // A cluster: the node joins once, on the host's store, for every tenant.
    auto node_cfg = host->cfg_.base;
    node_cfg.in_memory = false;
    node_cfg.store_uri = host->cfg_.store;
    node_cfg.read_model_dir.clear();
    node_cfg.create_store = true;
    auto node = application::start(std::move(node_cfg), router{});
    if (!node)
      return node.error();
    host->node_ = std::move(*node);
    if (!host->node_->registration().tenant_provider("probe"))
      return persistence::make_error(persistence::store_errc::invalid_argument,
                                     "this registration cannot host tenants (registration::tenant_provider)");
    host->node_->registration().open_tenants_with([h = host.get()](const std::string& name) {
      if (!valid_name(name))
        return;
      std::lock_guard lock{h->mtx_};
      if (h->open_.count(name) == 0 && h->wanted_.insert(name).second)
        h->cv_.notify_all();
    });
    host->opener_ = std::thread{[h = host.get()] { h->open_loop(); }};
  }
  host->sweeper_ = std::thread{[h = host.get()] { h->sweep_loop(); }};
  return host;
}

application_host::application_host(application_host_config config) : cfg_(std::move(config)) {}

application_host::~application_host() {
  stop();
}

caf::expected<std::unique_ptr<application>> application_host::start_tenant(const std::string& name,
                                                                           bool create) const {
  auto cfg = cfg_.base;
  auto root = parsed_root(cfg_.store);
  cfg.in_memory = false;
  cfg.store_uri.clear();
  cfg.read_model_dir.clear();
  if (node_) // placed, forwarded and fenced by the node (tenant_provider)
    cfg.registration = node_->registration().tenant_provider(name);
  switch (root.type) {
    case persistence::store_uri::kind::memory:
      if (!create) // nothing outlives an open tenant on memory:
        return no_tenant(name);
      cfg.in_memory = true;
      break;
    case persistence::store_uri::kind::lmdb: {
      auto dir = std::filesystem::path{root.location} / name;
      std::error_code ec;
      if (!create && !std::filesystem::exists(dir / "data.mdb", ec))
        return no_tenant(name);
      std::filesystem::create_directories(dir, ec);
      if (ec)
        return persistence::make_error(persistence::store_errc::io_error,
                                       "tenant " + name + ": cannot create " + dir.string() + ": " + ec.message());
      cfg.data_dir = dir.string();
      break;
    }
    case persistence::store_uri::kind::postgres: {
      auto uri = root;
      uri.schema = "tenant_" + name;
      std::replace(uri.schema.begin(), uri.schema.end(), '-', '_'); // names have no '_': no two collide
      cfg.store_uri = uri.text();
      cfg.create_store = create; // a tenant's first write is its creation
      break;
    }
  }
  return application::start(std::move(cfg), cfg_.routes());
}

caf::expected<std::shared_ptr<tenant>> application_host::open(const std::string& name) {
  return open(name, true);
}

caf::expected<std::shared_ptr<tenant>> application_host::open_existing(const std::string& name) {
  return open(name, false);
}

caf::expected<std::shared_ptr<tenant>> application_host::open(const std::string& name, bool create) {
  if (!valid_name(name))
    return persistence::make_error(persistence::store_errc::invalid_argument,
                                   "'" + name + "' is not a tenant's name: 1 to 40 of a-z, 0-9 and '-'");
  std::shared_ptr<slot> mine;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{30};
  {
    std::unique_lock lock{mtx_};
    for (;;) {
      if (stopping_)
        return persistence::make_error(persistence::store_errc::store_closed, "the tenants' host is stopping");
      if (stopping_names_.count(name) != 0) { // its store is still held: wait for the stop
        if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && stopping_names_.count(name) != 0)
          return persistence::make_error(persistence::store_errc::timeout,
                                         "tenant " + name + " is closing and still in use: try again");
        continue;
      }
      auto i = open_.find(name);
      if (i == open_.end())
        break;
      if (!i->second->opening) {
        i->second->open->last_used_ = std::chrono::steady_clock::now();
        return i->second->open;
      }
      auto waiting_for = i->second;
      cv_.wait(lock, [&] { return !waiting_for->opening || stopping_; });
      if (waiting_for->failed) {
        // A read found no tenant; this open makes it.
        if (create && persistence::code_of(waiting_for->failed) == persistence::store_errc::no_store)
          continue;
        return waiting_for->failed;
      }
    }
    mine = std::make_shared<slot>();
    open_.emplace(name, mine);
  }
  // Started outside the lock: other tenants open meanwhile.
  std::shared_ptr<tenant> t{new tenant};
  t->name_ = name;
  t->node_ = node_;
  caf::error failed;
  if (auto app = start_tenant(name, create); !app) {
    failed = std::move(app.error());
    if (!create && persistence::code_of(failed) == persistence::store_errc::no_store)
      failed = no_tenant(name); // a schema never made: no tenant (not "run sourcery init")
  } else {
    t->app_ = std::move(*app);
    if (cfg_.setup) {
      auto state = cfg_.setup(*t->app_, name);
      if (state)
        t->state_ = std::move(*state);
      else
        failed = std::move(state.error());
    }
  }
  t->last_used_ = std::chrono::steady_clock::now();
  std::lock_guard lock{mtx_};
  mine->opening = false;
  if (failed) {
    mine->failed = failed;
    open_.erase(name);
    if (t->app_) {
      stopping_names_.insert(name);
      closing_.push_back(std::move(t)); // stopped by the sweeper
    }
    cv_.notify_all();
    return failed;
  }
  mine->open = t;
  cv_.notify_all();
  return t;
}

bool application_host::close(const std::string& name) {
  std::lock_guard lock{mtx_};
  auto i = open_.find(name);
  if (i == open_.end() || i->second->opening)
    return false;
  stopping_names_.insert(name);
  closing_.push_back(std::move(i->second->open));
  open_.erase(i);
  cv_.notify_all();
  return true;
}

std::vector<std::string> application_host::open_tenants() const {
  std::lock_guard lock{mtx_};
  std::vector<std::string> out;
  for (auto& [name, s] : open_)
    if (!s->opening)
      out.push_back(name);
  return out;
}

void application_host::sweep_loop() {
  std::unique_lock lock{mtx_};
  while (!stopping_) {
    auto now = std::chrono::steady_clock::now();
    if (cfg_.idle_timeout.count() > 0)
      for (auto i = open_.begin(); i != open_.end();) {
        auto& s = *i->second;
        if (!s.opening && s.open.use_count() == 1
            && now - std::max(s.open->last_used_, s.open->app_->registration().last_busy()) >= cfg_.idle_timeout) {
          stopping_names_.insert(i->first);
          closing_.push_back(std::move(s.open));
          i = open_.erase(i);
        } else {
          ++i;
        }
      }
    // Stop those nobody uses any more, outside the lock (a stop drains).
    std::vector<std::shared_ptr<tenant>> done;
    for (auto i = closing_.begin(); i != closing_.end();) {
      if (i->use_count() == 1) {
        done.push_back(std::move(*i));
        i = closing_.erase(i);
      } else {
        ++i;
      }
    }
    if (!done.empty()) {
      std::vector<std::string> names;
      for (auto& t : done)
        names.push_back(t->name());
      lock.unlock();
      done.clear(); // each application stops here
      lock.lock();
      for (auto& n : names)
        stopping_names_.erase(n);
      cv_.notify_all();
      continue;
    }
    auto wait = cfg_.idle_timeout.count() > 0
                  ? std::min<std::chrono::milliseconds>(cfg_.idle_timeout / 4 + std::chrono::milliseconds{1},
                                                        std::chrono::seconds{1})
                  : std::chrono::milliseconds{1000};
    if (!closing_.empty())
      wait = std::min(wait, std::chrono::milliseconds{20}); // users let go soon
    cv_.wait_for(lock, wait);
  }
}

void application_host::open_loop() {
  std::unique_lock lock{mtx_};
  while (!stopping_) {
    if (wanted_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto name = *wanted_.begin();
    wanted_.erase(wanted_.begin());
    lock.unlock();
    (void) open(name); // failures are the tenant's: its next command asks again
    lock.lock();
  }
}

void application_host::stop() {
  std::vector<std::shared_ptr<tenant>> all;
  if (node_) // no peer has a tenant opened here from now on
    node_->registration().open_tenants_with(nullptr);
  {
    std::lock_guard lock{mtx_};
    if (stopping_ && !sweeper_.joinable() && !opener_.joinable() && !node_)
      return;
    stopping_ = true;
    for (auto& [name, s] : open_)
      if (s->open)
        all.push_back(std::move(s->open));
    open_.clear();
    for (auto& t : closing_)
      all.push_back(std::move(t));
    closing_.clear();
    cv_.notify_all();
  }
  if (sweeper_.joinable())
    sweeper_.join();
  if (opener_.joinable())
    opener_.join();
  all.clear(); // each stops here, or with its last user
  // The node stops after its tenants (they route through it): here, or
  // with the last tenant still in use.
  node_.reset();
}

} // namespace sourcery
