// A whole application on CAF's deterministic scheduler
// (`application_config::configure_actors`): the test runs every actor
// itself and moves the clock by hand, so what takes minutes of idleness
// is checked in microseconds and nothing sleeps. The store is in memory: it
// answers appends at once, as messages the scheduler delivers.

#include <caf/scheduler/test_coordinator.hpp>
#include <gtest/gtest.h>

#include "../../examples/bank/routes.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

class on_the_test_clock : public ::testing::Test {
protected:
  void start(aggregate_settings accounts = {}) {
    application_config cfg;
    cfg.in_memory = true;
    cfg.configure_actors = [](caf::actor_system_config& c) { c.set("scheduler.policy", caf::atom("testing")); };
    auto app = application::start(cfg, bank::routes(accounts));
    ASSERT_TRUE(app) << describe_error(app.error());
    app_ = std::move(*app);
    sched_ = &dynamic_cast<caf::scheduler::test_coordinator&>(app_->system().scheduler());
  }

  void TearDown() override {
    if (app_)
      app_->stop();
  }

  /// Dispatches and runs every actor until nothing is left to do.
  template <class C>
  caf::expected<dispatch_result> dispatch(const C& cmd) {
    std::optional<caf::expected<dispatch_result>> answer;
    app_->dispatch_async(cmd, {}, [&answer](caf::expected<dispatch_result> r) { answer = std::move(r); });
    sched_->run();
    if (!answer)
      return caf::make_error(caf::sec::request_timeout, "unanswered after running every actor");
    return std::move(*answer);
  }

  /// Open account actors, as the accounts' subtree counts them.
  size_t live_accounts() {
    auto kids = app_->root().which_children();
    if (!kids)
      return 0;
    for (auto& k : *kids)
      if (k.id == "aggregate:bank::account")
        if (auto sub = supervision::supervisor{app_->system(), k.actor}.which_children())
          for (auto& s : *sub)
            if (s.id == "aggregates")
              if (auto c = supervision::supervisor{app_->system(), s.actor}.count_children())
                return c->active;
    return 0;
  }

  void advance(caf::timespan t) {
    sched_->advance_time(t);
    sched_->run();
  }

  std::unique_ptr<application> app_;
  caf::scheduler::test_coordinator* sched_ = nullptr;
};

TEST_F(on_the_test_clock, commands_are_answered_by_running_the_actors) {
  start();
  auto opened = dispatch(open_account{"a", "ann"});
  ASSERT_TRUE(opened) << describe_error(opened.error());
  EXPECT_TRUE(opened->accepted);
  auto r = dispatch(withdraw{"a", 5});
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->accepted);
  EXPECT_EQ(r->why.reason, "insufficient_funds");
  ASSERT_TRUE(dispatch(deposit{"a", 30}));
  EXPECT_EQ(app_->aggregate_state<account>("account-a")->balance, 30);
}

TEST_F(on_the_test_clock, an_idle_account_passivates_after_its_declared_ten_minutes) {
  aggregate_settings accounts;
  accounts.lifespan = lifespan::timeout(10min);
  start(accounts);
  ASSERT_TRUE(dispatch(open_account{"b", "bob"}));
  EXPECT_EQ(live_accounts(), 1u);
  advance(9min);
  EXPECT_EQ(live_accounts(), 1u) << "idle for 9 of its 10 minutes";
  advance(2min);
  EXPECT_EQ(live_accounts(), 0u) << "passivated";
  auto r = dispatch(deposit{"b", 5});
  ASSERT_TRUE(r && r->accepted) << "reopened from the store";
  EXPECT_EQ(r->version, 2u);
  EXPECT_EQ(live_accounts(), 1u);
}

TEST_F(on_the_test_clock, after_error_passivates_an_account_that_refused_a_command) {
  aggregate_settings accounts;
  accounts.lifespan = lifespan::infinite();
  accounts.after_error = lifespan::timeout(1s);
  start(accounts);
  ASSERT_TRUE(dispatch(open_account{"c", "cy"}));
  advance(1h);
  EXPECT_EQ(live_accounts(), 1u) << "infinite after a success";
  auto r = dispatch(withdraw{"c", 1});
  ASSERT_TRUE(r && !r->accepted);
  advance(999ms);
  EXPECT_EQ(live_accounts(), 1u);
  advance(2ms);
  EXPECT_EQ(live_accounts(), 0u) << "1 s after the refusal";
}

} // namespace
