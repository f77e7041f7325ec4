// A cluster's membership and leases in a real PostgreSQL server: new
// incarnations, members declared down by the database's clock, and leases
// held by one node at a time with an epoch that grows when they change
// hands -- also when several nodes race for one.

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/postgres_coordination.hpp"

using namespace sourcery::persistence;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<postgres_coordination> open_coordination(const sourcery::testing::temp_dir& dir) {
  coordination_options opts;
  opts.conninfo = sourcery::testing::test_pg_uri();
  opts.schema = sourcery::testing::test_schema(dir);
  opts.setup = schema_setup::create;
  auto c = postgres_coordination::open(opts);
  EXPECT_TRUE(c) << describe(c.error());
  return c ? std::move(*c) : nullptr;
}

/// Joins `node` to "bank" and returns its lease owner name: only an up
/// member's incarnation takes a lease.
std::string up(postgres_coordination& c, const std::string& node) {
  auto incarnation = c.join("bank", node);
  EXPECT_TRUE(incarnation) << describe(incarnation.error());
  return lease_owner(node, incarnation ? *incarnation : 0);
}

TEST(coordination, a_restarted_node_is_a_new_incarnation_and_the_old_one_may_not_renew) {
  sourcery::testing::temp_dir dir;
  auto c = open_coordination(dir);
  ASSERT_TRUE(c);
  auto first = c->join("bank", "127.0.0.1:4001");
  ASSERT_TRUE(first);
  EXPECT_EQ(c->renew("bank", "127.0.0.1:4001", *first).value(), true);
  auto second = c->join("bank", "127.0.0.1:4001"); // the same address, restarted
  ASSERT_TRUE(second);
  EXPECT_GT(*second, *first);
  EXPECT_EQ(c->renew("bank", "127.0.0.1:4001", *first).value(), false) << "the old incarnation must stop serving";
  EXPECT_EQ(c->renew("bank", "127.0.0.1:4001", *second).value(), true);
  ASSERT_TRUE(c->join("other-cluster", "127.0.0.1:4001"));
  auto members = c->members("bank");
  ASSERT_TRUE(members);
  ASSERT_EQ(members->size(), 1u) << "clusters are apart";
  EXPECT_EQ((*members)[0].state, "up");
  EXPECT_EQ((*members)[0].incarnation, *second);
}

TEST(coordination, members_that_stop_renewing_are_declared_down_and_learn_it) {
  sourcery::testing::temp_dir dir;
  auto c = open_coordination(dir);
  ASSERT_TRUE(c);
  auto a = c->join("bank", "a:1");
  auto b = c->join("bank", "b:1");
  ASSERT_TRUE(a && b);
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(c->renew("bank", "b:1", *b).value());
  auto down = c->declare_down("bank", 200ms);
  ASSERT_TRUE(down);
  EXPECT_EQ(*down, std::vector<std::string>{"a:1"});
  EXPECT_EQ(c->renew("bank", "a:1", *a).value(), false) << "a finds itself down: it must stop serving";
  auto members = c->members("bank");
  ASSERT_TRUE(members);
  ASSERT_EQ(members->size(), 2u);
  EXPECT_EQ((*members)[0].state, "down");
  EXPECT_EQ((*members)[1].state, "up");
  EXPECT_LT((*members)[1].since_renewal, 200ms);
  ASSERT_TRUE(c->leave("bank", "b:1", *b));
  EXPECT_EQ(c->members("bank")->at(1).state, "left");
  EXPECT_TRUE(c->declare_down("bank", 0ms)->empty()) << "a member that left is not declared down";
}

TEST(coordination, a_lease_has_one_owner_and_its_epoch_grows_when_it_changes_hands) {
  sourcery::testing::temp_dir dir;
  auto c = open_coordination(dir);
  ASSERT_TRUE(c);
  auto a1 = up(*c, "a:1"), b1 = up(*c, "b:1");
  auto a = c->acquire("bank", "shard-7", a1, 10s);
  ASSERT_TRUE(a && *a);
  EXPECT_EQ(**a, 1);
  EXPECT_EQ(c->acquire("bank", "shard-7", b1, 10s).value(), std::nullopt) << "held by a";
  EXPECT_EQ(c->acquire("bank", "shard-7", a1, 10s).value(), std::optional<int64_t>{1}) << "a keeps its epoch";
  EXPECT_EQ(c->renew_lease("bank", "shard-7", a1, 1, 10s).value(), true);
  ASSERT_TRUE(c->release("bank", "shard-7", a1, 1));
  auto b = c->acquire("bank", "shard-7", b1, 10s);
  ASSERT_TRUE(b && *b);
  EXPECT_EQ(**b, 2) << "a new owner, a greater epoch";
  EXPECT_EQ(c->renew_lease("bank", "shard-7", a1, 1, 10s).value(), false) << "a lost it";
  auto leases = c->leases("bank");
  ASSERT_TRUE(leases);
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].owner, b1);
  EXPECT_EQ((*leases)[0].epoch, 2);
  EXPECT_GT((*leases)[0].left, 5s);
}

TEST(coordination, an_expired_lease_goes_to_the_next_taker_and_the_old_owner_cannot_renew) {
  sourcery::testing::temp_dir dir;
  auto c = open_coordination(dir);
  ASSERT_TRUE(c);
  auto a1 = up(*c, "a:1"), b1 = up(*c, "b:1");
  ASSERT_EQ(c->acquire("bank", "handler:balances", a1, 100ms).value(), std::optional<int64_t>{1});
  EXPECT_EQ(c->acquire("bank", "handler:balances", b1, 10s).value(), std::nullopt);
  std::this_thread::sleep_for(200ms); // a paused past its lease
  EXPECT_EQ(c->acquire("bank", "handler:balances", b1, 10s).value(), std::optional<int64_t>{2});
  EXPECT_EQ(c->renew_lease("bank", "handler:balances", a1, 1, 10s).value(), false);
  EXPECT_EQ(c->acquire("bank", "handler:balances", a1, 10s).value(), std::nullopt);
}

TEST(coordination, a_node_renews_only_the_leases_it_names_and_never_one_it_released) {
  sourcery::testing::temp_dir dir;
  auto c = open_coordination(dir);
  ASSERT_TRUE(c);
  auto a1 = up(*c, "a:1");
  ASSERT_TRUE(c->acquire("bank", "shard:1", a1, 10s).value());
  ASSERT_TRUE(c->acquire("bank", "shard:2", a1, 300ms).value());
  auto r = c->renew_leases("bank", a1, 10s, {"shard:1"});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].name, "shard:1");
  std::this_thread::sleep_for(400ms); // shard:2, not named, ran out
  EXPECT_TRUE(c->renew_leases("bank", a1, 10s, {"shard:2"})->empty());
  ASSERT_TRUE(c->release("bank", "shard:1", a1, 1));
  EXPECT_TRUE(c->renew_leases("bank", a1, 10s, {"shard:1", "shard:2"})->empty()) << "released: not renewed";
  EXPECT_EQ(c->acquire("bank", "shard:1", up(*c, "b:1"), 10s).value(), std::optional<int64_t>{2});
}

TEST(coordination, only_an_up_members_incarnation_takes_a_lease) {
  sourcery::testing::temp_dir dir;
  auto c = open_coordination(dir);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->acquire("bank", "shard:1", "stranger:1#1", 10s).value(), std::nullopt) << "never joined";
  auto a1 = up(*c, "a:1");
  auto a2 = up(*c, "a:1"); // restarted: the old incarnation is no member any more
  EXPECT_EQ(c->acquire("bank", "shard:1", a1, 10s).value(), std::nullopt) << "a past incarnation";
  auto held = c->acquire("bank", "shard:1", a2, 10s);
  ASSERT_TRUE(held && *held);
  auto b1 = up(*c, "b:1");
  ASSERT_TRUE(c->release("bank", "shard:1", a2, **held));
  ASSERT_TRUE(c->leave("bank", "b:1", std::stoll(b1.substr(b1.rfind('#') + 1))));
  EXPECT_EQ(c->acquire("bank", "handler:x", b1, 10s).value(), std::nullopt) << "a member that left";
  EXPECT_EQ(c->acquire("bank", "shard:1", a2, 10s).value(), std::optional<int64_t>{**held + 1});
}

TEST(coordination, of_nodes_racing_for_one_lease_exactly_one_wins) {
  sourcery::testing::temp_dir dir;
  auto first = open_coordination(dir); // creates the tables
  ASSERT_TRUE(first);
  constexpr int nodes = 8;
  std::vector<std::unique_ptr<postgres_coordination>> cs;
  coordination_options opts;
  opts.conninfo = sourcery::testing::test_pg_uri();
  opts.schema = sourcery::testing::test_schema(dir);
  opts.setup = schema_setup::create;
  for (int i = 0; i < nodes; ++i) {
    auto c = postgres_coordination::open(opts);
    ASSERT_TRUE(c);
    cs.push_back(std::move(*c));
  }
  for (int round = 0; round < 5; ++round) {
    std::atomic<int> winners{0}, errors{0};
    std::vector<std::thread> ts;
    std::string name = "shard-" + std::to_string(round);
    std::vector<std::string> owners;
    for (int i = 0; i < nodes; ++i)
      owners.push_back(up(*first, "n" + std::to_string(i) + ":1"));
    for (int i = 0; i < nodes; ++i)
      ts.emplace_back([&, i] {
        auto r = cs[static_cast<size_t>(i)]->acquire("bank", name, owners[static_cast<size_t>(i)], 10s);
        if (!r)
          ++errors;
        else if (*r)
          ++winners;
      });
    for (auto& t : ts)
      t.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(winners.load(), 1) << "round " << round;
  }
}

TEST(coordination, a_store_of_the_first_cluster_version_is_upgraded_in_place_and_keeps_its_members) {
  sourcery::testing::temp_dir dir;
  auto schema = sourcery::testing::test_schema(dir);
  // What a node of the previous release left: cluster tables version 1.
  sourcery::testing::run_sql(sourcery::testing::test_pg_uri(),
                             "CREATE SCHEMA " + schema + "; CREATE TABLE " + schema
                               + ".schema_version (component text PRIMARY KEY, version int NOT NULL);"
                                 " CREATE TABLE " + schema + ".cluster_members (cluster text NOT NULL, node text NOT NULL,"
                                 " incarnation bigint NOT NULL, state text NOT NULL, renewed_at timestamptz NOT NULL,"
                                 " PRIMARY KEY (cluster, node)); CREATE TABLE " + schema + ".cluster_leases (cluster text"
                                 " NOT NULL, name text NOT NULL, owner text NOT NULL, epoch bigint NOT NULL, expires_at"
                                 " timestamptz NOT NULL, PRIMARY KEY (cluster, name)); CREATE SEQUENCE " + schema
                               + ".cluster_incarnations; INSERT INTO " + schema + ".schema_version VALUES ('cluster', 1);"
                                 " INSERT INTO " + schema + ".cluster_members VALUES ('bank', 'old:1', 1, 'left', now())");
  auto c = open_coordination(dir);
  ASSERT_TRUE(c);
  EXPECT_EQ(sourcery::testing::run_sql(sourcery::testing::test_pg_uri(),
                                       "SELECT version FROM " + schema + ".schema_version WHERE component = 'cluster'"),
            "3");
  auto members = c->members("bank");
  ASSERT_TRUE(members);
  ASSERT_EQ(members->size(), 1u) << "the members it had are kept";
  EXPECT_EQ(c->agree_shards("bank", 64, 2500ms).value(), 64u);
  EXPECT_EQ(c->agree_shards("bank", 32, 2500ms).value(), 32u) << "no member runs: the next to start sets it";
  auto a1 = up(*c, "a:1");
  EXPECT_EQ(c->agree_shards("bank", 64, 2500ms).value(), 32u) << "a member runs with 32";
  EXPECT_FALSE(c->shunned("bank", "a:1", 2500ms).value());
  ASSERT_TRUE(c->vote("bank", "c:1", "a:1", false));
  EXPECT_TRUE(c->declare_unreachable("bank", 2500ms)->empty()) << "one voter among fewer than two others decides nothing";
  (void) a1;
}

TEST(coordination, a_bad_schema_name_or_an_unreachable_server_is_a_clear_error) {
  sourcery::testing::temp_dir dir;
  coordination_options opts;
  opts.conninfo = sourcery::testing::test_pg_uri();
  opts.schema = "no; DROP";
  auto bad = postgres_coordination::open(opts);
  ASSERT_FALSE(bad);
  EXPECT_EQ(code_of(bad.error()), store_errc::invalid_argument);
  opts.schema = "sourcery";
  opts.conninfo = "postgresql:///postgres?host=" + dir.str() + "&port=1";
  opts.connect_timeout = 1s;
  auto gone = postgres_coordination::open(opts);
  ASSERT_FALSE(gone);
  EXPECT_EQ(code_of(gone.error()), store_errc::unavailable) << describe(gone.error());
}

} // namespace

namespace {

TEST(coordination, a_member_found_gone_is_declared_down_once_it_has_been_silent_a_while) {
  sourcery::testing::temp_dir dir;
  auto c = open_coordination(dir);
  ASSERT_TRUE(c);
  auto a = c->join("bank", "a:1");
  ASSERT_TRUE(a);
  ASSERT_TRUE(c->acquire("bank", "shard:1", lease_owner("a:1", *a), 10s).value());
  // Just renewed: a refused probe alone is not enough.
  EXPECT_EQ(c->declare_gone("bank", "a:1", 200ms).value(), false);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(c->declare_gone("bank", "a:1", 200ms).value(), true);
  EXPECT_EQ(c->declare_gone("bank", "a:1", 200ms).value(), false) << "once";
  EXPECT_EQ(c->renew("bank", "a:1", *a).value(), false) << "it learns it is down";
  // Its lease goes at once, not when it runs out.
  EXPECT_EQ(c->expire_orphaned("bank").value(), 1);
  auto b = c->acquire("bank", "shard:1", up(*c, "b:1"), 10s);
  ASSERT_TRUE(b && *b);
  EXPECT_EQ(**b, 2);
}

} // namespace

namespace {

// A node killed and started again joins as a new incarnation at the same
// address. The votes its peers cast while the old process was silent were
// against that process: the new one is not declared down, nor shunned, for
// them -- only votes cast after its join count.
TEST(coordination, a_new_incarnation_is_not_declared_down_for_the_votes_against_the_old_one) {
  sourcery::testing::temp_dir dir;
  auto c = open_coordination(dir);
  ASSERT_TRUE(c);
  up(*c, "a:1");
  up(*c, "b:1");
  up(*c, "c:1");
  ASSERT_TRUE(c->vote("bank", "c:1", "a:1", false)); // c's process silent: both others vote
  ASSERT_TRUE(c->vote("bank", "c:1", "b:1", false));
  EXPECT_TRUE(c->shunned("bank", "c:1", 2500ms).value()) << "a majority of the others voted";
  up(*c, "c:1"); // started again: a new incarnation
  EXPECT_FALSE(c->shunned("bank", "c:1", 2500ms).value()) << "the old process's votes went with it";
  auto down = c->declare_unreachable("bank", 2500ms);
  ASSERT_TRUE(down) << describe(down.error());
  EXPECT_TRUE(down->empty()) << "the new incarnation was declared down for the old one's silence";
  // Votes cast after the join count as before.
  ASSERT_TRUE(c->vote("bank", "c:1", "a:1", false));
  ASSERT_TRUE(c->vote("bank", "c:1", "b:1", false));
  down = c->declare_unreachable("bank", 2500ms);
  ASSERT_TRUE(down) << describe(down.error());
  EXPECT_EQ(*down, std::vector<std::string>{"c:1"});
}

} // namespace
