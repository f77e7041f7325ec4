#pragma once

// The shards this node serves, as the lease table last confirmed them, and
// the commands running on each: the one place routing, fencing and handoff
// agree on what this node owns. (Which aggregates are open is the
// registries' to know: a shard that moves stops those its streams select.)

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "sourcery/persistence/append_fence.hpp"

namespace sourcery::cluster::detail {

/// The consumer a checkpoint belongs to: "handler:N" (an event handler's),
/// "process:N" (a process manager's) or N (a projection's) -> N.
std::string_view consumer_of_checkpoint(std::string_view name) noexcept;

class shard_table final : public persistence::append_fence {
public:
  using clock = std::chrono::steady_clock;

  /// `lease_ttl`: a lease renewed at t is trusted here until t + ttl less a
  /// margin (the database's clock decides; fencing catches the rest).
  shard_table(std::string cluster, std::string owner, uint32_t shards, std::chrono::milliseconds lease_ttl);

  /// Names the leases' owner: at join, and again at each re-join as a new
  /// incarnation (after `lose_all`).
  void set_owner(std::string owner);
  uint32_t shards() const noexcept { return static_cast<uint32_t>(slots_.size()); }
  uint32_t shard_of(std::string_view stream) const noexcept;

  // -- append_fence -------------------------------------------------------------
  const std::string& cluster() const override { return cluster_; }
  std::string owner() const override;
  persistence::fence_lease lease_for(std::string_view stream) const override;
  /// "handler:N" (an event handler's), "process:N" (a process manager's) or
  /// N (a projection's) -> the consumer's lease, handler_lease(N).
  persistence::fence_lease lease_for_checkpoint(std::string_view name) const override;

  // -- consumers' leases (handlers, projections, process managers) ------------
  /// A consumer's lease just acquired at `epoch`.
  void held_named(const std::string& lease, int64_t epoch);
  /// A renewal confirmed it as of `at` (if held at that epoch).
  void renewed_named(const std::string& lease, int64_t epoch, clock::time_point at);
  /// Not renewed: lost, unless (re)confirmed at or after `since`. True if lost.
  bool lost_named_if_confirmed_before(const std::string& lease, clock::time_point since);
  /// The consumers' leases held here.
  std::vector<std::string> named_leases() const;
  void lost_named(const std::string& lease);
  int64_t epoch_named(const std::string& lease) const;

  // -- routing ------------------------------------------------------------------
  /// Admits a command to `shard` when this node serves it: lease held and
  /// trusted, not being handed over. An admitted command is in flight until
  /// `leave`.
  bool enter(uint32_t shard);
  void leave(uint32_t shard);

  // -- the keeper ---------------------------------------------------------------
  /// The lease of `shard` is held at `epoch` (just acquired), as of `renewed`.
  void held(uint32_t shard, int64_t epoch, clock::time_point renewed);
  /// A renewal confirmed the lease of `shard` at `epoch` as of `at`: trusted
  /// longer if the table holds it at that epoch (a renewal never brings
  /// back a shard given up meanwhile).
  void renewed(uint32_t shard, int64_t epoch, clock::time_point at);
  /// The lease was not renewed: lost, unless it was (re)confirmed at or
  /// after `since` (acquired while the renewal ran). True if lost.
  bool lost_if_confirmed_before(uint32_t shard, clock::time_point since);
  /// The lease is gone (released, lost, expired): nothing is admitted.
  void lost(uint32_t shard);
  /// Every lease is gone (this node stopped serving): nothing is admitted
  /// and no write passes the fence.
  void lose_all();
  int64_t epoch(uint32_t shard) const;
  std::vector<uint32_t> held_shards() const;
  /// The names of every lease held here (shards and consumers): what this
  /// node renews.
  std::vector<std::string> held_leases() const;
  /// Admits nothing more to `shard` (it is being handed over).
  void release(uint32_t shard);
  size_t in_flight(uint32_t shard) const;

private:
  struct slot {
    int64_t epoch = 0; ///< 0: not held
    bool releasing = false;
    clock::time_point trusted_until{};
    clock::time_point confirmed{}; ///< when the store last confirmed it
    size_t in_flight = 0;
  };
  std::string cluster_, owner_;
  std::chrono::milliseconds trust_;
  mutable std::mutex mtx_;
  std::vector<slot> slots_;
  struct named_lease {
    int64_t epoch = 0;
    clock::time_point confirmed{}; ///< when the store last confirmed it
  };
  std::map<std::string, named_lease, std::less<>> named_;
};

} // namespace sourcery::cluster::detail
