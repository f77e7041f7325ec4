#include "tenant_registration.hpp"

#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/postgres_coordination.hpp"

namespace sourcery::cluster::detail {

persistence::fence_lease tenant_fence::lease_for_checkpoint(std::string_view name) const {
  return table_->lease_for_checkpoint(tenant_ + "/" + std::string{consumer_of_checkpoint(name)});
}

tenant_registration::tenant_registration(cluster_registration& node, std::string tenant, registration_context ctx)
  : node_(node), tenant_(std::move(tenant)), ctx_(std::move(ctx)), local_(ctx_.system, ctx_.root, ctx_.observer),
    fence_(std::make_shared<const tenant_fence>(node.table(), tenant_, node.coordination_schema())) {}

tenant_registration::~tenant_registration() {
  stop();
}

caf::error tenant_registration::start() {
  // Every append and checkpoint of this tenant is fenced with the node's
  // leases, before a command of it runs here.
  if (auto err = ctx_.store.fence_appends(fence_))
    return err;
  node_.attach(tenant_, local_, busy_);
  attached_ = true;
  return {};
}

void tenant_registration::stop() {
  if (!std::exchange(attached_, false))
    return;
  node_.detach(tenant_);
}

void tenant_registration::route(command_envelope cmd, reply done) {
  cmd.tenant = tenant_;
  node_.route(std::move(cmd), std::move(done));
}

caf::error tenant_registration::run_once(const std::string& name, std::function<caf::error()> start,
                                         std::function<void()> stop) {
  {
    std::lock_guard guard{consumers_mtx_};
    consumers_.push_back(qualified(name));
  }
  return node_.run_once(qualified(name), std::move(start), std::move(stop), tenant_);
}

std::chrono::steady_clock::time_point tenant_registration::last_busy() const {
  // A consumer running here keeps its tenant open: closed, it would be
  // asked open again at once by the nodes where the tenant is in use.
  {
    std::lock_guard guard{consumers_mtx_};
    for (auto& name : consumers_)
      if (node_.runs_here(name))
        return std::chrono::steady_clock::now();
  }
  return std::chrono::steady_clock::time_point{
    std::chrono::steady_clock::duration{busy_.load(std::memory_order_relaxed)}};
}

bool tenant_registration::runs_here(const std::string& name) const {
  return node_.runs_here(qualified(name));
}

namespace {

class tenant_provider_of_node final : public registration_provider {
public:
  tenant_provider_of_node(cluster_registration& node, std::string tenant) : node_(node), tenant_(std::move(tenant)) {}

  // The tenant's actor system needs nothing more: its commands cross
  // nodes over the node's links, in the node's actor system.

  caf::expected<std::unique_ptr<registration>> create(registration_context ctx) const override {
    if (!ctx.store_uri || ctx.store_uri->type != persistence::store_uri::kind::postgres)
      return persistence::make_error(persistence::store_errc::invalid_argument,
                                     "tenant " + tenant_ + " of a cluster node needs a PostgreSQL store");
    // Its fenced appends record their writer in its own schema's
    // cluster_writes (append_fence.hpp): the cluster's tables are made
    // there once, as a node's own store has them.
    persistence::coordination_options tables;
    tables.conninfo = ctx.store_uri->location;
    tables.schema = ctx.store_uri->schema;
    tables.connect_timeout = ctx.store_uri->connect_timeout;
    if (auto made = persistence::postgres_coordination::open(tables); !made)
      return made.error();
    return std::unique_ptr<registration>{new tenant_registration{node_, tenant_, std::move(ctx)}};
  }

private:
  cluster_registration& node_;
  std::string tenant_;
};

} // namespace

std::shared_ptr<const registration_provider> cluster_registration::tenant_provider(const std::string& name) {
  return std::make_shared<const tenant_provider_of_node>(*this, name);
}

} // namespace sourcery::cluster::detail
