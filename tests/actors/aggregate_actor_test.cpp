// Aggregates as actors on the real scheduler and a real LMDB store: strictly
// serial commands under concurrency, many live aggregates, passivation and
// reopening, and a crash inside execute.

#include <atomic>

#include <future>

#include <gtest/gtest.h>

#include "../support/temp_dir.hpp"
#include "../../examples/bank/bank.hpp"
#include "sourcery/actors/aggregate_actor.hpp"
#include "sourcery/persistence/lmdb_store.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

struct explode {};

/// An account whose `explode` command throws: a bug in domain code.
struct fragile_account : account {
  using account::execute;
  outcome<event> execute(const explode&) const { throw std::runtime_error("bug in execute"); }
};

/// An account that chooses its own lifespan: stays after opening, leaves at
/// once after a withdrawal, and lingers briefly after a deposit command.
struct moody_account : account {
  using account::execute;
  sourcery::lifespan after_event(const account_opened&) const { return sourcery::lifespan::infinite(); }
  sourcery::lifespan after_event(const money_withdrawn&) const { return sourcery::lifespan::stop(); }
  sourcery::lifespan after_command(const deposit&) const { return sourcery::lifespan::timeout(20ms); }
};

template <class A>
class aggregate_world : public ::testing::Test {
protected:
  void open(std::chrono::milliseconds lifespan = 0ms) {
    cfg_.set("logger.verbosity", caf::atom("quiet"));
    sys_.emplace(cfg_);
    ASSERT_FALSE(register_events<A>(types_));
    auto s = persistence::lmdb_store::open({.path = (dir_ / "store").string()});
    ASSERT_TRUE(s) << persistence::describe(s.error());
    store_ = std::move(*s);
    repo_.emplace(*store_, types_, aggregate_options{.snapshot_every = 0, .max_retries = 3});
    supervision::supervisor_flags f;
    f.name = "aggregates";
    f.how = supervision::strategy::simple_one_for_one;
    auto sup = supervision::supervisor::start(*sys_, f, {aggregate_child_spec<A>(&*repo_, lifespan)});
    ASSERT_TRUE(sup) << supervision::describe(sup.error());
    aggregates_.emplace(*sup);
    registry_ = sys_->spawn(aggregate_registry<A>, aggregates_->handle());
  }

  void TearDown() override {
    if (aggregates_)
      aggregates_->stop();
    if (registry_)
      caf::anon_send_exit(registry_, caf::exit_reason::user_shutdown);
    registry_ = nullptr;
    aggregates_.reset();
    sys_.reset();
  }

  template <class C>
  caf::expected<dispatch_reply> dispatch(const std::string& stream, C cmd) {
    caf::scoped_actor self{*sys_};
    caf::expected<dispatch_reply> result = caf::error{};
    command_for<A> envelope{stream, [cmd](const A& a) { return a.execute(cmd); }, {}, {}, {}, {}};
    if constexpr (requires(const A& a) { a.after_command(cmd); })
      envelope.after_command = [cmd](const A& a) { return a.after_command(cmd); };
    self->request(registry_, 10s, dispatch_atom::value, std::move(envelope))
      .receive([&](dispatch_reply& r) { result = std::move(r); }, [&](caf::error& e) { result = std::move(e); });
    return result;
  }

  size_t live_aggregates() {
    auto c = aggregates_->count_children();
    return c ? c->active : 0;
  }

  sourcery::testing::temp_dir dir_;
  caf::actor_system_config cfg_;
  std::optional<caf::actor_system> sys_;
  persistence::event_registry types_;
  std::unique_ptr<persistence::lmdb_store> store_;
  std::optional<aggregate_repository<A>> repo_;
  std::optional<supervision::supervisor> aggregates_;
  caf::actor registry_;
};

using accounts = aggregate_world<account>;

TEST_F(accounts, a_thousand_concurrent_dispatchers_on_one_aggregate_are_served_one_by_one) {
  open();
  ASSERT_TRUE(dispatch("account-1", open_account{"account-1", "alice"}));
  constexpr int n = 1000;
  auto accepted = std::make_shared<std::atomic<int>>(0);
  auto versions = std::make_shared<std::vector<uint64_t>>();
  caf::scoped_actor waiter{*sys_};
  auto done = caf::actor{waiter};
  // 1,000 requests in flight at once from 10 actors.
  for (int d = 0; d < 10; ++d)
    sys_->spawn([=, registry = registry_](caf::event_based_actor* self) {
      auto left = std::make_shared<int>(n / 10);
      for (int i = 0; i < n / 10; ++i) {
        command_for<account> envelope{"account-1", [](const account& a) { return a.execute(deposit{"account-1", 1}); }, {}, {}, {}, {}};
        self->request(registry, 30s, dispatch_atom::value, std::move(envelope))
          .then(
            [=](dispatch_reply& r) {
              if (r.accepted)
                ++*accepted;
              if (--*left == 0)
                self->send(done, dispatch_atom::value);
            },
            [=](caf::error&) {
              if (--*left == 0)
                self->send(done, dispatch_atom::value);
            });
      }
    });
  for (int d = 0; d < 10; ++d)
    waiter->receive([](dispatch_atom) {});
  EXPECT_EQ(accepted->load(), n);
  auto info = store_->stream_info("account-1");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->version, static_cast<uint64_t>(n + 1)) << "a lost update or a duplicate";
  auto state = repo_->load("account-1");
  ASSERT_TRUE(state);
  EXPECT_EQ(state->state.balance, n);
}

TEST_F(accounts, rejections_are_answers_not_failures) {
  open();
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "bob"}));
  auto r = dispatch("acc", withdraw{"acc", 10});
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->accepted);
  EXPECT_EQ(r->why.reason, "insufficient_funds");
  auto ok = dispatch("acc", deposit{"acc", 10});
  ASSERT_TRUE(ok && ok->accepted);
  EXPECT_EQ(ok->version, 2u);
  EXPECT_GT(ok->last_position, 0u);
}

TEST_F(accounts, ten_thousand_live_aggregates) {
  open();
  constexpr int n = 10'000;
  caf::scoped_actor waiter{*sys_};
  auto done = caf::actor{waiter};
  auto accepted = std::make_shared<std::atomic<int>>(0);
  sys_->spawn([=, registry = registry_](caf::event_based_actor* self) -> caf::behavior {
    auto left = std::make_shared<int>(n);
    for (int i = 0; i < n; ++i) {
      auto id = "account-" + std::to_string(i);
      command_for<account> envelope{id, [id](const account& a) { return a.execute(open_account{id, "owner"}); }, {}, {}, {}, {}};
      self->send(registry, dispatch_atom::value, std::move(envelope));
    }
    return {
      [=](dispatch_reply& r) {
        if (r.accepted)
          ++*accepted;
        if (--*left == 0)
          self->send(done, dispatch_atom::value);
      },
      [=](caf::error&) {
        if (--*left == 0)
          self->send(done, dispatch_atom::value);
      },
    };
  });
  waiter->receive([](dispatch_atom) {});
  EXPECT_EQ(accepted->load(), n);
  EXPECT_EQ(live_aggregates(), static_cast<size_t>(n));
  EXPECT_EQ(store_->head_position(), static_cast<uint64_t>(n));
}

TEST_F(accounts, idle_aggregates_passivate_and_reopen_from_the_store) {
  open(30ms);
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "carol"}));
  ASSERT_TRUE(dispatch("acc", deposit{"acc", 40}));
  EXPECT_EQ(live_aggregates(), 1u);
  // Wait for passivation: the count drops once the actor has stopped.
  size_t live = 1;
  for (int i = 0; i < 2000 && live != 0; ++i) {
    std::this_thread::sleep_for(1ms);
    live = live_aggregates();
  }
  ASSERT_EQ(live, 0u) << "the idle aggregate did not passivate";
  auto r = dispatch("acc", withdraw{"acc", 40});
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->accepted) << "the reopened aggregate lost its state: " << r->why.reason;
  EXPECT_EQ(r->version, 3u);
}

using moody_accounts = aggregate_world<moody_account>;

TEST_F(moody_accounts, events_and_commands_choose_the_lifespan) {
  open(); // no default lifespan: aggregates stay unless they choose otherwise
  auto wait_until_live = [&](size_t n, int max_ms = 2000) {
    size_t live = live_aggregates();
    for (int i = 0; i < max_ms && live != n; ++i) {
      std::this_thread::sleep_for(1ms);
      live = live_aggregates();
    }
    return live;
  };
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "ida"}));
  EXPECT_EQ(wait_until_live(0, 100), 1u) << "after_event(account_opened) is infinite";
  ASSERT_TRUE(dispatch("acc", deposit{"acc", 10}));
  EXPECT_EQ(wait_until_live(0), 0u) << "after_command(deposit) is 20 ms";
  ASSERT_TRUE(dispatch("acc", withdraw{"acc", 5}));
  EXPECT_EQ(wait_until_live(0), 0u) << "after_event(money_withdrawn) stops at once";
  auto r = dispatch("acc", withdraw{"acc", 5});
  ASSERT_TRUE(r && r->accepted) << "reopened with its state";
  EXPECT_EQ(r->version, 4u);
}

using fragile_accounts = aggregate_world<fragile_account>;

TEST_F(fragile_accounts, a_crash_in_execute_fails_that_command_only) {
  open();
  caf::scoped_actor self{*sys_};
  auto send = [&](std::function<outcome<account::event>(const fragile_account&)> f) {
    caf::expected<dispatch_reply> result = caf::error{};
    self->request(registry_, 10s, dispatch_atom::value, command_for<fragile_account>{"acc", std::move(f), {}, {}, {}, {}})
      .receive([&](dispatch_reply& r) { result = std::move(r); }, [&](caf::error& e) { result = std::move(e); });
    return result;
  };
  ASSERT_TRUE(send([](const fragile_account& a) { return a.execute(open_account{"acc", "dan"}); }));
  ASSERT_TRUE(send([](const fragile_account& a) { return a.execute(deposit{"acc", 25}); }));
  auto crashed = send([](const fragile_account& a) { return a.execute(explode{}); });
  ASSERT_FALSE(crashed) << "a crash must reach the caller as an error";
  auto after = send([](const fragile_account& a) { return a.execute(withdraw{"acc", 25}); });
  ASSERT_TRUE(after) << supervision::describe(after.error());
  EXPECT_TRUE(after->accepted) << "rebuilt from the store: balance 25";
  EXPECT_EQ(after->version, 3u);
}

TEST_F(accounts, a_command_to_a_dead_registry_fails_at_once_not_at_its_timeout) {
  open();
  caf::scoped_actor self{*sys_};
  self->monitor(registry_);
  caf::anon_send_exit(registry_, caf::exit_reason::kill);
  self->receive([](caf::down_msg&) {});
  std::promise<caf::expected<dispatch_reply>> answered;
  command_for<account> envelope{"acc", [](const account& a) { return a.execute(open_account{"acc", "eve"}); },
                                {}, {}, {}, {}};
  envelope.reply_to = std::make_shared<reply_slot>(
    [&answered](caf::expected<dispatch_reply> r) { answered.set_value(std::move(r)); });
  caf::anon_send(registry_, dispatch_atom::value, std::move(envelope));
  auto answer = answered.get_future();
  ASSERT_EQ(answer.wait_for(2s), std::future_status::ready) << "the dropped command was never answered";
  auto r = answer.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), caf::sec::request_receiver_down);
  auto info = store_->stream_info("acc");
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->exists) << "nothing was executed";
  registry_ = nullptr;
}

} // namespace
