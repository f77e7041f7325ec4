#pragma once

// Fencing writes with a lease (Kleppmann's fencing token): in a cluster a
// node appends to a stream only while it holds the lease of that stream's
// shard, and the store checks the lease -- owner, epoch, not expired, by the
// database's clock -- inside the append's own transaction. A node paused or
// cut off past its lease therefore cannot commit, whatever it believes. The
// checkpoints of handlers that run once cluster-wide are fenced the same way.

#include <cstdint>
#include <string>
#include <string_view>

namespace sourcery::persistence {

/// A lease as the appending node holds it.
struct fence_lease {
  std::string name;  ///< e.g. "shard:17"
  int64_t epoch = 0; ///< 0: not held (appends to the stream are refused)
  /// False for a stream any node may append to, unchecked (the forgotten
  /// subjects': personal.hpp).
  bool required = true;
};

/// Tells the store which lease covers each stream. Called on the store's
/// writer thread for every append: keep it short and thread-safe.
class append_fence {
public:
  virtual ~append_fence() = default;
  /// The cluster whose lease table is checked.
  virtual const std::string& cluster() const = 0;
  /// This node's name as the lease table records it (it changes when the
  /// node re-joins as a new incarnation: a copy, read once per write).
  virtual std::string owner() const = 0;
  virtual fence_lease lease_for(std::string_view stream) const = 0;
  /// The lease that lets this node move checkpoint `name` (an event
  /// handler's in the event store, a projection's or process manager's in
  /// the read models): such consumers run on one node of a cluster at a time.
  virtual fence_lease lease_for_checkpoint(std::string_view name) const = 0;
  /// The PostgreSQL schema whose lease table is checked; empty (the
  /// default): the store's own. The tenants of a cluster node each have a
  /// schema of their own and check the leases of the node's.
  virtual std::string lease_schema() const { return {}; }
};

} // namespace sourcery::persistence
