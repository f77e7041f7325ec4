#pragma once

// Tenants: one process hosting an application per tenant, as Commanded runs
// an application per tenant. Each tenant has its own store (a folder under
// an LMDB root, or a PostgreSQL schema `tenant_<name>`), its own actors and
// supervision tree, handlers and read models: a tenant whose store fails or
// fills disturbs no other. A tenant opens on first use and closes after
// being idle; the host may also open and close them at will.
//
//     sourcery::application_host_config cfg;
//     cfg.store = "lmdb:todo-data/tenants";
//     cfg.routes = [] { return todo::routes(); };
//     cfg.setup = [](sourcery::application& app, const std::string&) -> caf::expected<std::shared_ptr<void>> {
//       ...add handlers and projections; return what the tenant's requests need (or null)
//     };
//     auto host = sourcery::application_host::start(std::move(cfg));
//     auto acme = (*host)->open("acme");          // started now, or the open one
//     (*acme)->app().dispatch(...);
//
// A tenant's name is [a-z0-9-]{1,40}.
//
// In a cluster (`base.registration` is a node's, node_registration.hpp, on
// a PostgreSQL store): the host runs the node itself -- one application of
// its own on `store`, which joins the cluster once for every tenant -- and
// each tenant's registration shares it (registration::tenant_provider): one
// membership, one set of links, the same placement. A tenant's aggregates
// run on the owner of their shard, as a single application's do; a node that
// receives a command for a tenant not open there opens it, and so does a
// node where one of the tenant's consumers is placed.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <caf/expected.hpp>

#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/commands/router.hpp"

namespace sourcery {

/// One open tenant: its application, and what `setup` made for it. Held by
/// the host while open and by whoever uses it; a tenant closed while in use
/// stops once its last user lets go.
class tenant {
public:
  ~tenant();
  tenant(const tenant&) = delete;
  tenant& operator=(const tenant&) = delete;

  const std::string& name() const noexcept { return name_; }
  sourcery::application& app() noexcept { return *app_; }
  /// What the host's `setup` returned for this tenant, as a `T`.
  template <class T>
  T* state() const noexcept {
    return static_cast<T*>(state_.get());
  }

private:
  friend class application_host;
  tenant() = default;
  std::string name_;
  /// In a cluster, the node it routes through: it stops after the tenant.
  std::shared_ptr<sourcery::application> node_;
  std::unique_ptr<sourcery::application> app_;
  std::shared_ptr<void> state_;
  std::chrono::steady_clock::time_point last_used_;
};

struct application_host_config {
  /// Every tenant's configuration; its store fields are set per tenant.
  /// Tenants default to one scheduler thread each.
  application_config base = [] {
    application_config c;
    c.scheduler_threads = 1;
    return c;
  }();
  /// Where the tenants' stores live: `lmdb:DIR` (tenant `acme` in DIR/acme,
  /// its read models in DIR/acme/read-models), `memory:` (nothing survives),
  /// or a `postgresql://` URI (tenant `acme-corp` in schema `tenant_acme_corp`
  /// of that database).
  std::string store = "lmdb:tenants";
  /// The routes of every tenant's application.
  std::function<router()> routes;
  /// Runs once a tenant's application started: adds its handlers and
  /// projections, and returns what its requests need (tenant::state), or
  /// null. An error closes the tenant and is what `open` answers.
  std::function<caf::expected<std::shared_ptr<void>>(application&, const std::string& name)> setup;
  /// A tenant nobody used for this long is closed (0: never).
  std::chrono::milliseconds idle_timeout = std::chrono::minutes{5};
};

class application_host {
public:
  /// Errors: invalid_argument for a store URI that does not parse or no
  /// routes; in a cluster, the node's start errors (application::start).
  static caf::expected<std::unique_ptr<application_host>> start(application_host_config config);

  /// Stops every tenant.
  ~application_host();
  application_host(const application_host&) = delete;
  application_host& operator=(const application_host&) = delete;

  /// Tenant `name`, started if it is not open. Concurrent opens of one
  /// tenant start it once.
  /// Errors: invalid_argument (a name outside [a-z0-9-]{1,40}), the
  /// application's start errors (its store's: store_full, unavailable, ...),
  /// and `setup`'s.
  caf::expected<std::shared_ptr<tenant>> open(const std::string& name);

  /// As `open`, for a tenant that exists: one whose store is missing is not
  /// made (a read must not create a tenant for any name it is given).
  /// Errors: no_store for a tenant never created (on `memory:`, one not
  /// open), and `open`'s.
  caf::expected<std::shared_ptr<tenant>> open_existing(const std::string& name);

  /// Closes tenant `name`: it stops once no one uses it. Returns whether it
  /// was open.
  bool close(const std::string& name);

  /// The names of the open tenants, sorted.
  std::vector<std::string> open_tenants() const;

  /// Whether `name` is a tenant's name: [a-z0-9-]{1,40}.
  static bool valid_name(std::string_view name) noexcept;

  /// Stops every tenant (then the node, in a cluster). Idempotent.
  void stop();

  /// In a cluster, the node's own application (its placement, metrics and
  /// health); null otherwise.
  application* node() noexcept { return node_.get(); }

private:
  struct slot; // a tenant being opened, or open
  explicit application_host(application_host_config config);
  /// `create`: make its store if missing; else no_store.
  caf::expected<std::unique_ptr<application>> start_tenant(const std::string& name, bool create) const;
  caf::expected<std::shared_ptr<tenant>> open(const std::string& name, bool create);
  void sweep_loop();
  /// Opens the tenants peers need here (registration::open_tenants_with).
  void open_loop();

  application_host_config cfg_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<slot>> open_;
  std::vector<std::shared_ptr<tenant>> closing_; // stopped on the sweeper thread once unused
  std::set<std::string> stopping_names_;         // closing or stopping: opened again once stopped
  bool stopping_ = false;
  std::thread sweeper_;
  /// In a cluster: joined once for every tenant; each holds it too.
  std::shared_ptr<application> node_;
  std::set<std::string> wanted_;      ///< tenants peers need opened here
  std::thread opener_;
};

} // namespace sourcery
