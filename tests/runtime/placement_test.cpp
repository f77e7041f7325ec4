// Placement by identity: a stable hash (the same on every node and build,
// checked against fixed values), shards spread evenly, and rendezvous
// hashing moving only what must move when a member comes or goes.

#include <algorithm>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "sourcery/runtime/cluster/placement.hpp"

using namespace sourcery::cluster;

namespace {

TEST(placement, the_hash_is_fnv1a_and_does_not_change_between_builds) {
  // FNV-1a 64's published test vectors: any change here would move every
  // aggregate of a running cluster.
  EXPECT_EQ(stable_hash(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(stable_hash("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(stable_hash("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(shard_of("account-42", 1024), stable_hash("account-42") % 1024);
  EXPECT_EQ(shard_of("anything", 0), 0u);
}

TEST(placement, streams_spread_evenly_over_shards) {
  constexpr uint32_t shards = 64;
  std::vector<int> count(shards);
  for (int i = 0; i < 64'000; ++i)
    ++count[shard_of("account-" + std::to_string(i), shards)];
  auto [lo, hi] = std::minmax_element(count.begin(), count.end());
  EXPECT_GT(*lo, 800) << "expected about 1000 per shard";
  EXPECT_LT(*hi, 1200);
}

TEST(placement, every_shard_has_one_owner_and_members_share_them_fairly) {
  std::vector<std::string> members{"10.0.0.1:4000", "10.0.0.2:4000", "10.0.0.3:4000"};
  constexpr uint32_t shards = 1024;
  size_t total = 0;
  for (auto& m : members) {
    auto mine = shards_of(m, members, shards);
    total += mine.size();
    EXPECT_GT(mine.size(), 280u) << m;
    EXPECT_LT(mine.size(), 400u) << m;
  }
  EXPECT_EQ(total, shards) << "each shard exactly once";
  EXPECT_EQ(owner_of(7, {}), std::nullopt);
  // The order of the member list does not matter.
  std::vector<std::string> shuffled{members[2], members[0], members[1]};
  for (uint32_t s = 0; s < shards; ++s)
    EXPECT_EQ(owner_of(s, members), owner_of(s, shuffled));
}

TEST(placement, a_member_leaving_moves_only_its_own_shards_and_one_joining_takes_a_fair_part) {
  std::vector<std::string> three{"a:1", "b:1", "c:1"};
  std::vector<std::string> two{"a:1", "c:1"};
  std::vector<std::string> four{"a:1", "b:1", "c:1", "d:1"};
  constexpr uint32_t shards = 1024;
  size_t moved_to_d = 0;
  for (uint32_t s = 0; s < shards; ++s) {
    auto before = *owner_of(s, three);
    if (before != "b:1") {
      EXPECT_EQ(*owner_of(s, two), before) << "shard " << s << " moved though its owner stayed";
    }
    auto after = *owner_of(s, four);
    if (after != before) {
      EXPECT_EQ(after, "d:1") << "a join moves shards only to the newcomer";
      ++moved_to_d;
    }
  }
  EXPECT_GT(moved_to_d, 200u);
  EXPECT_LT(moved_to_d, 320u) << "about a quarter";
}

} // namespace
