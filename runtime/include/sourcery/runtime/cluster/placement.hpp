#pragma once

// Where an aggregate lives in a cluster: its stream id hashes to one of a
// fixed number of shards, and the shards are placed over the live members
// by rendezvous (highest-random-weight) hashing with bounded loads: no
// member holds more than ceil(shards / members), so with 64 shards the
// busiest of 2-10 members holds at most 1.125 x the mean. Both are pure functions,
// the same on every node and every build (never `std::hash`), so every
// node computes the same placement from the same member list; the lease
// table in the store, not this computation, has the last word on who
// serves a shard.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sourcery::cluster {

/// FNV-1a, 64 bits: a stable hash of bytes.
uint64_t stable_hash(std::string_view bytes) noexcept;

/// The shard of a stream: `stable_hash(stream_id) % shards` (shards > 0).
uint32_t shard_of(std::string_view stream_id, uint32_t shards) noexcept;

/// The member with the highest weight `hash(member, shard)`, without a
/// bound on its load: where a handler's lease is placed (few of them).
/// Removing a member moves only its own; adding one takes about 1/n from
/// the others. nullopt without members.
std::optional<std::string> owner_of(uint32_t shard, const std::vector<std::string>& members);

/// The names of the leases in the store: a shard's, a handler's (an event
/// handler, projection or process manager, which runs on one node at a time).
std::string shard_lease(uint32_t shard);
std::string handler_lease(std::string_view handler);

/// The owner of each shard (0 .. shards-1) among `members` (in any order;
/// "" for every shard without members): the (member, shard) pairs by
/// descending weight, each placing its shard while the shard is free and
/// the member holds fewer than ceil(shards / members). A member leaving
/// moves its own shards and a few others; one joining takes about
/// shards / members, from the others.
std::vector<std::string> place_shards(const std::vector<std::string>& members, uint32_t shards);

/// The shards `member` should own among `members` (see `place_shards`).
std::vector<uint32_t> shards_of(const std::string& member, const std::vector<std::string>& members, uint32_t shards);

} // namespace sourcery::cluster
