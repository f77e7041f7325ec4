#pragma once

// A tenant's registration on a cluster node (application_host.hpp): the
// tenant's aggregates and consumers run in its own application -- its own
// actors, store and read models -- while the node it shares with the other
// tenants places, forwards and fences them. One membership, one set of
// links and one placement serve every tenant: the aggregate of stream s of
// any tenant runs on the owner of shard_of(s); a consumer N of tenant T runs
// on one node at a time, under lease handler_lease("T/N").

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>
#include <string>

#include "../registration/local_registration.hpp"
#include "cluster_registration.hpp"

namespace sourcery::cluster::detail {

/// The fence of a tenant's stores: the node's shard leases, in the node's
/// schema; a checkpoint N is the tenant's consumer "T/N".
class tenant_fence final : public persistence::append_fence {
public:
  tenant_fence(std::shared_ptr<const shard_table> table, std::string tenant, std::string schema)
    : table_(std::move(table)), tenant_(std::move(tenant)), schema_(std::move(schema)) {}

  const std::string& cluster() const override { return table_->cluster(); }
  std::string owner() const override { return table_->owner(); }
  persistence::fence_lease lease_for(std::string_view stream) const override { return table_->lease_for(stream); }
  persistence::fence_lease lease_for_checkpoint(std::string_view name) const override;
  std::string lease_schema() const override { return schema_; }

private:
  std::shared_ptr<const shard_table> table_;
  std::string tenant_;
  std::string schema_;
};

class tenant_registration final : public registration {
public:
  tenant_registration(cluster_registration& node, std::string tenant, registration_context ctx);
  /// Detached, if it was not.
  ~tenant_registration() override;

  caf::error host(const sourcery::detail::aggregate_host& host) override { return local_.host(host); }
  /// Fences the tenant's store with the node's leases and serves.
  caf::error start() override;
  /// Serves no more here: its consumers stop, their leases go. Idempotent.
  void stop() override;
  void route(command_envelope cmd, reply done) override;
  caf::error run_once(const std::string& name, std::function<caf::error()> start,
                      std::function<void()> stop) override;
  bool runs_here(const std::string& name) const override;
  std::shared_ptr<const persistence::append_fence> fence() const override { return fence_; }
  caf::error outage() const override { return node_.outage(); }
  /// Nothing of its own: the node's metrics are its application's.
  void render_metrics(std::string&) const override {}
  registration_description describe() const override { return node_.describe(); }
  /// Now while one of its consumers runs here, else its last command from a peer.
  std::chrono::steady_clock::time_point last_busy() const override;

private:
  /// "T/N": consumer N of this tenant, as the node names it.
  std::string qualified(const std::string& name) const { return tenant_ + "/" + name; }

  cluster_registration& node_;
  std::string tenant_;
  registration_context ctx_;
  sourcery::detail::local_registration local_;
  std::shared_ptr<const tenant_fence> fence_;
  bool attached_ = false;
  std::atomic<int64_t> busy_{0}; ///< the node's: its last command from a peer (steady ticks)
  mutable std::mutex consumers_mtx_;
  std::vector<std::string> consumers_; ///< qualified names, as the node runs them
};

} // namespace sourcery::cluster::detail
