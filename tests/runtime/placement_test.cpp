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

TEST(placement, every_shard_has_one_owner_and_no_member_holds_more_than_its_bound) {
  // The default 64 shards over 2-10 members: the busiest holds at most
  // ceil(64 / n), at most 1.125 x the mean -- whatever the members' names.
  for (std::string host : {"127.0.0.1:", "10.1.2.3:", "node-"})
    for (size_t n = 1; n <= 10; ++n) {
      std::vector<std::string> members;
      for (size_t i = 0; i < n; ++i)
        members.push_back(host + std::to_string(7000 + 17 * i));
      auto owners = place_shards(members, 64);
      std::map<std::string, size_t> load;
      for (auto& o : owners) {
        ASSERT_FALSE(o.empty());
        ++load[o];
      }
      EXPECT_EQ(load.size(), n) << "every member has a share";
      size_t busiest = 0;
      for (auto& [m, k] : load)
        busiest = std::max(busiest, k);
      EXPECT_LE(static_cast<double>(busiest), 1.15 * 64.0 / static_cast<double>(n)) << host << " x " << n;
      // The order of the member list does not matter; shards_of agrees.
      std::vector<std::string> reversed{members.rbegin(), members.rend()};
      EXPECT_EQ(place_shards(reversed, 64), owners);
      EXPECT_EQ(shards_of(members[0], members, 64).size(), load[members[0]]);
    }
  EXPECT_EQ(owner_of(7, {}), std::nullopt);
  EXPECT_EQ(place_shards({}, 4), std::vector<std::string>(4));
}

TEST(placement, a_member_leaving_or_joining_moves_little_more_than_balance_needs) {
  std::vector<std::string> three{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"};
  std::vector<std::string> two{"127.0.0.1:7001", "127.0.0.1:7003"};
  std::vector<std::string> four{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7004"};
  auto before = place_shards(three, 64), left = place_shards(two, 64), joined = place_shards(four, 64);
  size_t moved_on_leave = 0, moved_on_join = 0, to_newcomer = 0, gone = 0;
  for (size_t s = 0; s < 64; ++s) {
    gone += before[s] == "127.0.0.1:7002";
    moved_on_leave += left[s] != before[s];
    moved_on_join += joined[s] != before[s];
    to_newcomer += joined[s] == "127.0.0.1:7004";
  }
  // Leaving: the leaver's shards, and a few more for balance.
  EXPECT_GE(moved_on_leave, gone);
  EXPECT_LE(moved_on_leave, gone + 8);
  // Joining: the newcomer's share (16), and a few more for balance.
  EXPECT_EQ(to_newcomer, 16u);
  EXPECT_LE(moved_on_join, 2 * to_newcomer);
  // Rendezvous for handler leases: removing a member moves only its own.
  for (uint32_t s = 0; s < 1024; ++s) {
    auto o = *owner_of(s, three);
    if (o != "127.0.0.1:7002") {
      EXPECT_EQ(*owner_of(s, two), o);
    }
  }
}

} // namespace
