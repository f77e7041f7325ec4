#pragma once

// A cluster's membership and leases in PostgreSQL, which every node
// already reaches: no consensus of our own. Every time is the database's
// (`now()`), so the nodes' clocks need not agree.
//
// - Members: each node registers as a new incarnation when it starts and
//   renews its row; members that stop renewing are declared down, and a
//   node whose renewal fails has been declared down (or restarted
//   elsewhere) and must stop serving at once.
// - Leases: a named lease (a shard, a handler) has one owner until it
//   expires or is released, and an epoch that grows each time it changes
//   hands, so writes fenced with the epoch cannot come from an old owner.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

namespace sourcery::persistence {

struct coordination_options {
  std::string conninfo;
  /// The schema of the store's tables (the cluster's live beside them).
  std::string schema = "sourcery";
  std::chrono::milliseconds connect_timeout{5000};
  /// Each call's deadline: past it, `timeout` (a frozen server never answers).
  std::chrono::milliseconds operation_timeout{5000};
  /// Create the tables when missing. False (an operator's tool): a store
  /// where no cluster ever ran reads as empty, and nothing is written.
  bool create = true;
};

struct member_info {
  std::string node;    ///< how peers reach it, "host:port"
  int64_t incarnation = 0; ///< grows at each start of the node
  std::string state;   ///< "up", "down" (declared) or "left" (cleanly)
  std::chrono::milliseconds since_renewal{0};
};

struct lease_info {
  std::string name;
  std::string owner;
  int64_t epoch = 0;
  std::chrono::milliseconds left{0}; ///< until it expires (0: expired)
};

/// The owner name of leases taken by incarnation `incarnation` of `node`:
/// a restarted node is another owner, so leases of its past life move.
inline std::string lease_owner(const std::string& node, int64_t incarnation) {
  return node + "#" + std::to_string(incarnation);
}
/// The node of a lease owner name (the name itself when it has no '#').
inline std::string node_of_owner(const std::string& owner) {
  return owner.substr(0, owner.rfind('#'));
}

class postgres_coordination {
public:
  /// Connects and creates the tables when missing (component "cluster").
  /// Errors: invalid_argument (bad schema name), unavailable,
  /// authentication_failed, timeout, foreign_store, unsupported_format_version.
  static caf::expected<std::unique_ptr<postgres_coordination>> open(coordination_options options);
  ~postgres_coordination();

  /// Registers `node` in `cluster` as a new incarnation, up. Returns the incarnation.
  caf::expected<int64_t> join(const std::string& cluster, const std::string& node);
  /// Renews `node`'s registration. False: it was declared down, left, or a
  /// newer incarnation took its place -- it must stop serving.
  caf::expected<bool> renew(const std::string& cluster, const std::string& node, int64_t incarnation);
  /// Declares down the members that have not renewed for `ttl`; returns them.
  caf::expected<std::vector<std::string>> declare_down(const std::string& cluster, std::chrono::milliseconds ttl);
  /// Declares `node` down if it has not renewed for `silent_for`: a peer
  /// found it gone (nothing listens at its address) and need not wait for
  /// the full `ttl`. True if it was up and is now down.
  caf::expected<bool> declare_gone(const std::string& cluster, const std::string& node,
                                   std::chrono::milliseconds silent_for);
  /// Leaves cleanly (after handing its leases over).
  caf::expected<void> leave(const std::string& cluster, const std::string& node, int64_t incarnation);
  /// Every member ever registered in `cluster`, by node.
  caf::expected<std::vector<member_info>> members(const std::string& cluster);

  /// Takes lease `name` for `node` for `ttl` when it is free, expired, or
  /// already `node`'s (then it is extended). Returns its epoch: the same
  /// while `node` keeps it, a greater one when it changes hands. nullopt:
  /// another node holds it.
  caf::expected<std::optional<int64_t>> acquire(const std::string& cluster, const std::string& name,
                                                const std::string& node, std::chrono::milliseconds ttl);
  /// Extends a lease `node` holds at `epoch`. False: it expired or changed hands.
  caf::expected<bool> renew_lease(const std::string& cluster, const std::string& name, const std::string& node,
                                  int64_t epoch, std::chrono::milliseconds ttl);
  /// Gives a lease up at once (the next owner gets a greater epoch).
  caf::expected<void> release(const std::string& cluster, const std::string& name, const std::string& node,
                              int64_t epoch);
  /// Extends every unexpired lease `node` holds; returns them (name, epoch).
  /// A lease missing from the answer was lost.
  caf::expected<std::vector<lease_info>> renew_leases(const std::string& cluster, const std::string& node,
                                                      std::chrono::milliseconds ttl);
  /// Gives up every lease `node` holds (a clean leave).
  caf::expected<void> release_all(const std::string& cluster, const std::string& node);
  /// Expires at once the leases whose owner is not an up member's
  /// incarnation (`node#incarnation`, see `lease_owner`): a member declared
  /// down, left or restarted holds none, and its shards move now instead of
  /// when its leases run out. Returns how many it expired.
  caf::expected<int64_t> expire_orphaned(const std::string& cluster);
  caf::expected<std::vector<lease_info>> leases(const std::string& cluster);
  /// The clusters with members or leases, by name.
  caf::expected<std::vector<std::string>> clusters();

  struct impl;

private:
  explicit postgres_coordination(std::unique_ptr<impl> st);
  std::unique_ptr<impl> st_;
};

} // namespace sourcery::persistence
