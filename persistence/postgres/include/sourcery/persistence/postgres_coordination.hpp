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

#include "sourcery/persistence/schema_setup.hpp"

namespace sourcery::persistence {

struct coordination_options {
  std::string conninfo;
  /// The schema of the store's tables (the cluster's live beside them).
  std::string schema = "sourcery";
  std::chrono::milliseconds connect_timeout{5000};
  /// Each call's deadline: past it, `timeout` (a frozen server never answers).
  std::chrono::milliseconds operation_timeout{5000};
  /// The longest a statement waits for a row lock (an acquire waiting for
  /// the writes fenced with the lease to commit) before it fails.
  std::chrono::milliseconds lock_timeout{1000};
  /// As postgres_options::setup: upgrade adds the cluster's tables to an
  /// existing store; none (an operator's tool) reads a store where no
  /// cluster ever ran as empty, and writes nothing.
  schema_setup setup = schema_setup::upgrade;
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

/// What a member's renewal found.
enum class member_renewal {
  renewed,       ///< still an up member: serve on
  declared_down, ///< declared down by the others: stop serving, join again
  replaced,      ///< another process joined as this node since: stop for good
};

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
  /// As `renew`, and tells a member declared down (it may join again) from
  /// one replaced by a newer incarnation of the same node (it must not).
  caf::expected<member_renewal> renew_member(const std::string& cluster, const std::string& node,
                                             int64_t incarnation);
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

  /// Takes lease `name` for `node` (an owner name, see `lease_owner`, of
  /// an up member's incarnation) for `ttl` when it is free, expired, or
  /// already `node`'s (then it is extended). Returns its epoch: the same
  /// while `node` keeps it, a greater one when it changes hands. nullopt:
  /// another node holds it, or `node` is no up member. A free lease is
  /// locked FOR UPDATE: the call waits (at most `lock_timeout`, then fails
  /// with timeout) for writes still fenced with it to commit.
  caf::expected<std::optional<int64_t>> acquire(const std::string& cluster, const std::string& name,
                                                const std::string& node, std::chrono::milliseconds ttl);
  /// Extends a lease `node` holds at `epoch`. False: it expired or changed hands.
  caf::expected<bool> renew_lease(const std::string& cluster, const std::string& name, const std::string& node,
                                  int64_t epoch, std::chrono::milliseconds ttl);
  /// Gives a lease up at once (the next owner gets a greater epoch).
  caf::expected<void> release(const std::string& cluster, const std::string& name, const std::string& node,
                              int64_t epoch);
  /// Extends the unexpired leases among `names` that `node` (an owner
  /// name, see `lease_owner`) holds while it is an up member's
  /// incarnation; returns them (name, epoch). A lease missing from the
  /// answer was lost; one not named is left to expire (a node renews only
  /// what it runs). Rows are locked in name order and FOR NO KEY UPDATE:
  /// writes fenced with them (FOR KEY SHARE) never hold a renewal up.
  caf::expected<std::vector<lease_info>> renew_leases(const std::string& cluster, const std::string& node,
                                                      std::chrono::milliseconds ttl,
                                                      const std::vector<std::string>& names);
  /// Gives up every lease `node` holds (a clean leave).
  caf::expected<void> release_all(const std::string& cluster, const std::string& node);
  /// Expires at once the leases whose owner is not an up member's
  /// incarnation (`node#incarnation`, see `lease_owner`): a member declared
  /// down, left or restarted holds none, and its shards move now instead of
  /// when its leases run out. Returns how many it expired.
  caf::expected<int64_t> expire_orphaned(const std::string& cluster);
  caf::expected<std::vector<lease_info>> leases(const std::string& cluster);

  /// The shard count of `cluster`: `shards` if no member of it has renewed
  /// within `ttl` (it is stored then), else the count its members run with.
  /// A node whose count differs must not join.
  caf::expected<uint32_t> agree_shards(const std::string& cluster, uint32_t shards, std::chrono::milliseconds ttl);

  // -- reachability (as Orleans members vote in its membership table) ------------
  /// Records that `voter` cannot reach `suspect` now (`reachable` false),
  /// or withdraws its vote (true).
  caf::expected<void> vote(const std::string& cluster, const std::string& suspect, const std::string& voter,
                           bool reachable);
  /// Declares down every up member that a majority of the other up members
  /// (two at least) voted unreachable within `window`; returns them.
  caf::expected<std::vector<std::string>> declare_unreachable(const std::string& cluster,
                                                             std::chrono::milliseconds window);
  /// Whether a majority of the up members (two at least, `node` aside)
  /// voted `node` unreachable within `window`: it must not join yet.
  caf::expected<bool> shunned(const std::string& cluster, const std::string& node, std::chrono::milliseconds window);
  /// The clusters with members or leases, by name.
  caf::expected<std::vector<std::string>> clusters();

  struct impl;

private:
  explicit postgres_coordination(std::unique_ptr<impl> st);
  std::unique_ptr<impl> st_;
};

} // namespace sourcery::persistence
