// The aggregate API: given/when/then cases, and the load/execute/append core
// on a real LMDB store (snapshots, snapshot invalidation, conflicts).

#include <gtest/gtest.h>

#include "../support/temp_dir.hpp"
#include "../../examples/bank/bank.hpp"
#include "sourcery/actors/aggregates/aggregate_repository.hpp"
#include "sourcery/actors/aggregates/aggregate_testing.hpp"
#include "sourcery/persistence/lmdb_store.hpp"

using namespace bank;
using namespace sourcery;
using sourcery::testing::given;

namespace {

TEST(account_cases, one_line_each) {
  EXPECT_TRUE(given<account>().when(open_account{"a1", "alice"}).then(account_opened{"alice"}));
  EXPECT_TRUE(given<account>(account_opened{"alice"}).when(open_account{"a1", "alice"}).rejects("already_open"));
  EXPECT_TRUE(given<account>(account_opened{"alice"}).when(deposit{"a1", 50}).then(money_deposited{50}));
  EXPECT_TRUE(given<account>(account_opened{"alice"}, money_deposited{100}).when(withdraw{"a1", 150}).rejects("insufficient_funds"));
  EXPECT_TRUE(given<account>(account_opened{"alice"}, money_deposited{100}).when(withdraw{"a1", 100}).then(money_withdrawn{100}));
  EXPECT_TRUE(given<account>().when(deposit{"a1", 5}).rejects("not_open"));
}

TEST(account_cases, failures_say_what_differs) {
  auto wrong = given<account>(account_opened{"alice"}).when(deposit{"a1", 50}).then(money_deposited{51});
  ASSERT_FALSE(wrong);
  EXPECT_NE(std::string{wrong.message()}.find("bank.money_deposited {\"amount\":50,\"transfer\":\"\"}"), std::string::npos)
    << wrong.message();
  auto not_rejected = given<account>(account_opened{"alice"}).when(deposit{"a1", 50}).rejects("nope");
  EXPECT_FALSE(not_rejected);
}

TEST(account_cases, command_handlers_stand_in_for_execute) {
  struct close_all {};
  auto handler = [](const account& a, const close_all&) -> outcome<account::event> {
    if (a.balance == 0)
      return no_events;
    return money_withdrawn{a.balance};
  };
  EXPECT_TRUE(given<account>(account_opened{"bob"}, money_deposited{30}).when(close_all{}, handler).then(money_withdrawn{30}));
  EXPECT_TRUE(given<account>(account_opened{"bob"}).when(close_all{}, handler).then());
}

class repository : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(register_events<account>(types_));
    auto s = persistence::lmdb_store::open({.path = (dir_ / "store").string()});
    ASSERT_TRUE(s) << persistence::describe(s.error());
    store_ = std::move(*s);
  }

  sourcery::testing::temp_dir dir_;
  persistence::event_registry types_;
  std::unique_ptr<persistence::lmdb_store> store_;
};

TEST_F(repository, executes_appends_and_rebuilds) {
  aggregate_repository<account> repo{*store_, types_};
  loaded<account> acc;
  auto opened = repo.execute("account-1", acc, open_account{"account-1", "alice"}, {"cmd-1", "corr-1", {}});
  ASSERT_TRUE(opened) << persistence::describe(opened.error());
  EXPECT_TRUE(opened->accepted);
  EXPECT_EQ(opened->version, 1u);
  ASSERT_TRUE(repo.execute("account-1", acc, deposit{"account-1", 70}));
  auto refused = repo.execute("account-1", acc, withdraw{"account-1", 100});
  ASSERT_TRUE(refused);
  EXPECT_FALSE(refused->accepted);
  EXPECT_EQ(refused->why.reason, "insufficient_funds");
  EXPECT_EQ(acc.version, 2u) << "a rejection appends nothing";

  auto rebuilt = repo.load("account-1");
  ASSERT_TRUE(rebuilt);
  EXPECT_EQ(rebuilt->version, 2u);
  EXPECT_EQ(rebuilt->state.balance, 70);
  EXPECT_TRUE(rebuilt->state.open);
  auto events = store_->read_stream("account-1", 1, 10);
  ASSERT_TRUE(events);
  EXPECT_EQ((*events)[0].causation_id, "cmd-1");
  EXPECT_EQ((*events)[0].correlation_id, "corr-1");
}

TEST_F(repository, snapshots_shorten_rebuilds_and_a_new_snapshot_version_invalidates_them) {
  aggregate_repository<account> repo{*store_, types_, {.snapshot_every = 10, .max_retries = 3}};
  loaded<account> acc;
  ASSERT_TRUE(repo.execute("acc", acc, open_account{"acc", "carol"}));
  for (int i = 0; i < 24; ++i)
    ASSERT_TRUE(repo.execute("acc", acc, deposit{"acc", 1}));
  auto snap = store_->load_snapshot("acc");
  ASSERT_TRUE(snap && snap->has_value());
  EXPECT_EQ((*snap)->stream_version, 20u);
  auto rebuilt = repo.load("acc");
  ASSERT_TRUE(rebuilt);
  EXPECT_EQ(rebuilt->from_snapshot, 20u);
  EXPECT_EQ(rebuilt->version, 25u);
  EXPECT_EQ(rebuilt->state.balance, 24);

  // A snapshot written by another state layout is ignored: rebuilt from events.
  auto stale = **snap;
  stale.snapshot_version = 99;
  stale.data = {0x81, 0xa7, 'b', 'a', 'l', 'a', 'n', 'c', 'e', 0xcd, 0x03, 0xe8}; // {balance: 1000}
  ASSERT_TRUE(store_->save_snapshot(stale));
  rebuilt = repo.load("acc");
  ASSERT_TRUE(rebuilt);
  EXPECT_EQ(rebuilt->from_snapshot, 0u);
  EXPECT_EQ(rebuilt->state.balance, 24);
}

TEST_F(repository, a_conflict_between_two_instances_reloads_and_retries) {
  aggregate_repository<account> first{*store_, types_};
  aggregate_repository<account> second{*store_, types_};
  loaded<account> a, b;
  ASSERT_TRUE(first.execute("shared", a, open_account{"shared", "dave"}));
  ASSERT_TRUE(first.execute("shared", a, deposit{"shared", 100}));
  auto loaded_b = second.load("shared");
  ASSERT_TRUE(loaded_b);
  b = *loaded_b;
  // Both see balance 100; A withdraws 80 first. B's withdrawal of 80 then
  // conflicts, B catches up, decides again and is refused.
  ASSERT_TRUE(first.execute("shared", a, withdraw{"shared", 80}));
  auto late = second.execute("shared", b, withdraw{"shared", 80});
  ASSERT_TRUE(late) << persistence::describe(late.error());
  EXPECT_FALSE(late->accepted);
  EXPECT_EQ(late->why.reason, "insufficient_funds");
  EXPECT_EQ(b.version, 3u);
  EXPECT_EQ(b.state.balance, 20);
  // A deposit from B after the conflict goes through on the fresh version.
  auto dep = second.execute("shared", b, deposit{"shared", 5});
  ASSERT_TRUE(dep && dep->accepted);
  EXPECT_EQ(dep->version, 4u);
}

TEST_F(repository, a_foreign_event_in_the_stream_is_a_clear_error) {
  persistence::event_data odd;
  odd.type = "shop.order_placed";
  ASSERT_TRUE(store_->append("acc", persistence::expected_version::any(), {odd}));
  aggregate_repository<account> repo{*store_, types_};
  auto r = repo.load("acc");
  ASSERT_FALSE(r);
  EXPECT_EQ(persistence::code_of(r.error()), persistence::store_errc::unknown_event_type);
  EXPECT_NE(persistence::describe(r.error()).find("shop.order_placed"), std::string::npos);
}

} // namespace
