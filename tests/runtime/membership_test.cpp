// This node's membership on a real PostgreSQL server: nodes see each
// other; a node whose renewals stop is declared down by the others and
// stops serving itself; a clean leave is seen at once; a restarted node is
// a new incarnation and the old one may not come back.

#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "../support/eventually.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/cluster/membership.hpp"

using namespace sourcery;
using namespace std::chrono_literals;

namespace {

using sourcery::testing::eventually;

std::shared_ptr<persistence::postgres_coordination> open_store(const sourcery::testing::temp_dir& dir) {
  persistence::coordination_options opts;
  opts.conninfo = sourcery::testing::test_pg_uri();
  opts.schema = sourcery::testing::test_schema(dir);
  opts.setup = persistence::schema_setup::create;
  auto c = persistence::postgres_coordination::open(opts);
  EXPECT_TRUE(c) << persistence::describe(c.error());
  return c ? std::shared_ptr<persistence::postgres_coordination>{std::move(*c)} : nullptr;
}

cluster::membership_options node(const std::string& name) {
  cluster::membership_options o;
  o.cluster = "bank";
  o.node = name;
  o.renew_every = 50ms;
  o.down_after = 400ms;
  return o;
}


using live_list = std::vector<std::string>;

TEST(membership, nodes_see_each_other_and_a_clean_leave_at_once) {
  sourcery::testing::temp_dir dir;
  auto store = open_store(dir);
  ASSERT_TRUE(store);
  auto a = cluster::membership::start(store, node("a:1"));
  auto b = cluster::membership::start(store, node("b:1"));
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(eventually([&] { return (*a)->live() == live_list{"a:1", "b:1"}; }));
  EXPECT_TRUE(eventually([&] { return (*b)->live() == live_list{"a:1", "b:1"}; }));
  ASSERT_FALSE((*a)->leave());
  EXPECT_FALSE((*a)->serving());
  EXPECT_TRUE(eventually([&] { return (*b)->live() == live_list{"b:1"}; }, 1s)) << "seen at b's next renewal";
  EXPECT_TRUE((*b)->serving());
}

TEST(membership, a_node_cut_off_is_declared_down_stops_serving_and_joins_again_once_it_reaches_the_store) {
  sourcery::testing::temp_dir dir;
  auto store = open_store(dir);
  ASSERT_TRUE(store);
  auto downs = std::make_shared<std::atomic<int>>(0);
  auto rejoins = std::make_shared<std::atomic<int>>(0);
  auto a_opts = node("a:1");
  a_opts.on_down = [downs](const caf::error&, bool) { ++*downs; };
  a_opts.on_rejoined = [rejoins](int64_t) { ++*rejoins; };
  auto a = cluster::membership::start(store, a_opts);
  auto b = cluster::membership::start(store, node("b:1"));
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(eventually([&] { return (*b)->live() == live_list{"a:1", "b:1"}; }));
  auto first = (*a)->incarnation();
  (*a)->pause_renewals(true);
  EXPECT_TRUE(eventually([&] { return (*b)->live() == live_list{"b:1"}; })) << "b declared a down";
  EXPECT_TRUE(eventually([&] { return !(*a)->serving(); })) << "a stopped serving on its own";
  EXPECT_EQ(rejoins->load(), 0) << "no join while the store is out of reach";
  (*a)->pause_renewals(false);
  EXPECT_TRUE(eventually([&] { return (*a)->serving(); })) << "a joins again once it reaches the store";
  EXPECT_GT((*a)->incarnation(), first) << "as a new incarnation";
  EXPECT_TRUE(eventually([&] { return (*b)->live() == live_list{"a:1", "b:1"}; })) << "b sees it again";
  EXPECT_EQ(downs->load(), 1);
  EXPECT_EQ(rejoins->load(), 1);
  EXPECT_FALSE((*a)->replaced());
}

// A store outage holds every node's renewals back. The first node through
// afterwards must not declare the others down for a silence it shared: they
// would all join again as new incarnations, and their shards move twice.
TEST(membership, after_an_outage_all_shared_the_first_node_back_declares_nobody_down_for_it) {
  sourcery::testing::temp_dir dir;
  auto store = open_store(dir);
  ASSERT_TRUE(store);
  auto declared = std::make_shared<std::atomic<int>>(0);
  auto a_opts = node("a:1");
  a_opts.on_declared_down = [declared](const std::vector<std::string>& nodes) { *declared += static_cast<int>(nodes.size()); };
  auto a = cluster::membership::start(store, a_opts);
  auto b = cluster::membership::start(store, node("b:1"));
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(eventually([&] { return (*a)->live() == live_list{"a:1", "b:1"}; }));
  // The outage: both miss their renewals for three times down_after.
  (*a)->pause_renewals(true);
  (*b)->pause_renewals(true);
  ASSERT_TRUE(eventually([&] { return !(*a)->serving() && !(*b)->serving(); }));
  std::this_thread::sleep_for(1200ms); // the outage's length
  (*a)->pause_renewals(false);
  ASSERT_TRUE(eventually([&] { return (*a)->serving(); })) << "a is back first";
  std::this_thread::sleep_for(50ms); // b a little later, as a loaded machine staggers them
  (*b)->pause_renewals(false);
  ASSERT_TRUE(eventually([&] { return (*b)->serving(); }));
  EXPECT_TRUE(eventually([&] { return (*a)->live() == live_list{"a:1", "b:1"}; }));
  EXPECT_EQ(declared->load(), 0) << "a declared b down for the outage they both went through";
  // Once a has renewed for down_after, silence counts again: b cut off
  // alone is declared down as before.
  (*b)->pause_renewals(true);
  EXPECT_TRUE(eventually([&] { return (*a)->live() == live_list{"a:1"}; }, 5s)) << "b's own silence";
  EXPECT_EQ(declared->load(), 1);
}

TEST(membership, a_restarted_node_is_a_new_incarnation_that_ends_the_old_one) {
  sourcery::testing::temp_dir dir;
  auto store = open_store(dir);
  ASSERT_TRUE(store);
  auto downs = std::make_shared<std::atomic<int>>(0);
  auto old_opts = node("a:1");
  old_opts.on_down = [downs](const caf::error&, bool replaced) {
    EXPECT_TRUE(replaced);
    ++*downs;
  };
  auto old = cluster::membership::start(store, old_opts);
  ASSERT_TRUE(old);
  auto fresh = cluster::membership::start(store, node("a:1")); // the same address, started again
  ASSERT_TRUE(fresh);
  EXPECT_GT((*fresh)->incarnation(), (*old)->incarnation());
  EXPECT_TRUE(eventually([&] { return !(*old)->serving(); }, 2s)) << "the old incarnation's renewal fails";
  EXPECT_EQ(downs->load(), 1);
  EXPECT_TRUE((*old)->replaced()) << "replaced, not declared down: it must not join again";
  std::this_thread::sleep_for(300ms); // a few renewal periods: the two do not take turns
  EXPECT_FALSE((*old)->serving());
  EXPECT_TRUE((*fresh)->serving());
}

} // namespace

namespace {

// A peer's message from a member this node has not seen yet is verified
// by a fresh reading of the members (node_link_hooks::verify): `wake`'s
// callback must come after a round that read them, not after one whose
// statements failed, or a member that just joined is refused.
TEST(membership, a_wake_answers_after_a_round_that_read_the_members) {
  sourcery::testing::temp_dir dir;
  auto store = open_store(dir);
  ASSERT_TRUE(store);
  auto a_opts = node("a:1");
  a_opts.down_after = 30s; // a stays serving while its rounds fail
  auto a = cluster::membership::start(store, a_opts);
  ASSERT_TRUE(a);
  (*a)->pause_renewals(true); // its rounds read nothing from now on
  auto b_opts = node("b:1");
  // Nor does b declare a down for its paused renewals: with 400 ms, a
  // loaded machine stretched the 300 ms below past it and a stopped serving.
  b_opts.down_after = 30s;
  auto b = cluster::membership::start(store, b_opts);
  ASSERT_TRUE(b);
  auto b_incarnation = (*b)->incarnation();
  auto answered = std::make_shared<std::promise<bool>>();
  auto seen = answered->get_future();
  auto* a_ptr = a->get();
  (*a)->wake([answered, a_ptr, b_incarnation] { answered->set_value(a_ptr->is_up("b:1", b_incarnation)); });
  // Rounds that fail come and go meanwhile (every 50 ms): none answers.
  EXPECT_EQ(seen.wait_for(300ms), std::future_status::timeout) << "answered without reading the members";
  (*a)->pause_renewals(false);
  ASSERT_EQ(seen.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(seen.get()) << "the answer came with a reading that has b";
  EXPECT_TRUE((*a)->serving());
}

} // namespace
