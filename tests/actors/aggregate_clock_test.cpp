// Aggregates on CAF's deterministic scheduler: the test runs every actor
// by hand and moves the clock itself, so lifespans are checked to the
// millisecond without sleeping. The store is in memory (it answers appends
// at once, as a message the scheduler delivers).

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <gtest/gtest.h>

#include "../../examples/bank/bank.hpp"
#include "sourcery/actors/aggregates/detail/aggregate_host.hpp"
#include "sourcery/actors/aggregates/detail/aggregate_registry.hpp"
#include "sourcery/persistence/memory_store.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

/// Stays after opening, leaves at once after a withdrawal, lingers 20 ms
/// after a deposit command.
struct moody_account : account {
  using account::execute;
  sourcery::lifespan after_event(const account_opened&) const { return sourcery::lifespan::infinite(); }
  sourcery::lifespan after_event(const money_withdrawn&) const { return sourcery::lifespan::stop(); }
  sourcery::lifespan after_command(const deposit&) const { return sourcery::lifespan::timeout(20ms); }
};

template <class A>
class on_the_test_clock : public ::testing::Test {
protected:
  void open(sourcery::lifespan lifespan) {
    cfg_.set("scheduler.policy", caf::atom("testing"));
    cfg_.set("logger.verbosity", caf::atom("quiet"));
    sys_.emplace(cfg_);
    sched_ = &dynamic_cast<caf::scheduler::test_coordinator&>(sys_->scheduler());
    ASSERT_FALSE(register_events<A>(types_));
    aggregate_settings settings;
    settings.lifespan = lifespan;
    host_ = std::make_unique<detail::aggregate_host_of<A>>("account", settings, store_, types_);
    handle<open_account>();
    handle<deposit>();
    handle<withdraw>();
    supervision::supervisor_flags f;
    f.name = "aggregates";
    f.how = supervision::strategy::simple_one_for_one;
    aggregates_ = supervision::spawn_supervisor(*sys_, f, {host_->actor_template()});
    registry_ = detail::spawn_aggregate_registry(*sys_, aggregates_);
    sched_->run();
    baseline_ = sys_->registry().running();
  }

  template <class C>
  void handle() {
    std::string name = typeid(C).name();
    host_->add(name, detail::executor_for<A, C>(name, [](const A& a, const C& c) { return a.execute(c); }));
  }

  void TearDown() override {
    caf::anon_send_exit(registry_, caf::exit_reason::kill);
    caf::anon_send_exit(aggregates_, caf::exit_reason::kill);
    if (sched_)
      sched_->run();
  }

  /// Dispatches and runs the actors until the answer is in.
  template <class C>
  caf::expected<dispatch_result> dispatch(const std::string& stream, const C& cmd) {
    command_envelope env;
    env.aggregate_type = "account";
    env.stream_id = stream;
    env.command_type = typeid(C).name();
    env.payload = encode_command(cmd);
    std::optional<caf::expected<dispatch_result>> answer;
    caf::anon_send(registry_, detail::dispatch_atom::value,
                   detail::command_delivery{std::move(env), std::make_shared<detail::reply_slot>(
                                                              [&answer](caf::expected<dispatch_result> r) {
                                                                answer = std::move(r);
                                                              })});
    sched_->run();
    if (!answer)
      return caf::make_error(caf::sec::request_timeout, "no answer after running every actor");
    return std::move(*answer);
  }

  /// Aggregate actors alive (the supervisor and the registry are the baseline).
  size_t live() { return sys_->registry().running() - baseline_; }

  void advance(caf::timespan t) {
    sched_->advance_time(t);
    sched_->run();
  }

  caf::actor_system_config cfg_;
  std::optional<caf::actor_system> sys_;
  caf::scheduler::test_coordinator* sched_ = nullptr;
  persistence::event_registry types_;
  persistence::memory_store store_;
  std::unique_ptr<detail::aggregate_host_of<A>> host_;
  caf::actor aggregates_;
  caf::actor registry_;
  size_t baseline_ = 0;
};

using clocked_accounts = on_the_test_clock<account>;

TEST_F(clocked_accounts, an_idle_aggregate_passivates_exactly_when_its_lifespan_ends) {
  open(sourcery::lifespan::timeout(30s));
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "ann"}));
  EXPECT_EQ(live(), 1u);
  advance(29s);
  EXPECT_EQ(live(), 1u) << "idle for 29 s of 30";
  ASSERT_TRUE(dispatch("acc", deposit{"acc", 5})); // busy again: the 30 s start over
  advance(29s);
  EXPECT_EQ(live(), 1u);
  advance(2s);
  EXPECT_EQ(live(), 0u) << "idle past 30 s";
  auto r = dispatch("acc", withdraw{"acc", 5});
  ASSERT_TRUE(r && r->accepted) << "reopened from the store";
  EXPECT_EQ(r->version, 3u);
  EXPECT_EQ(live(), 1u);
}

using clocked_moody_accounts = on_the_test_clock<moody_account>;

TEST_F(clocked_moody_accounts, events_and_commands_choose_the_lifespan) {
  open(sourcery::lifespan::timeout(1h));
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "ida"}));
  advance(2h);
  EXPECT_EQ(live(), 1u) << "after_event(account_opened) is infinite, over the default hour";
  ASSERT_TRUE(dispatch("acc", deposit{"acc", 10}));
  advance(19ms);
  EXPECT_EQ(live(), 1u);
  advance(2ms);
  EXPECT_EQ(live(), 0u) << "after_command(deposit) is 20 ms";
  ASSERT_TRUE(dispatch("acc", withdraw{"acc", 5}));
  EXPECT_EQ(live(), 0u) << "after_event(money_withdrawn) stops it as soon as it answers";
  auto r = dispatch("acc", withdraw{"acc", 5});
  ASSERT_TRUE(r && r->accepted) << "reopened with its state";
  EXPECT_EQ(r->version, 4u);
}

TEST_F(clocked_accounts, commands_to_one_aggregate_run_one_at_a_time_in_arrival_order) {
  open(sourcery::lifespan::infinite());
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "bo"}));
  std::vector<uint64_t> versions;
  for (int i = 0; i < 50; ++i) {
    command_envelope env;
    env.aggregate_type = "account";
    env.stream_id = "acc";
    env.command_type = typeid(deposit).name();
    env.payload = encode_command(deposit{"acc", 1});
    caf::anon_send(registry_, detail::dispatch_atom::value,
                   detail::command_delivery{std::move(env), std::make_shared<detail::reply_slot>(
                                                              [&versions](caf::expected<dispatch_result> r) {
                                                                versions.push_back(r ? r->version : 0);
                                                              })});
  }
  sched_->run();
  ASSERT_EQ(versions.size(), 50u);
  for (size_t i = 0; i < versions.size(); ++i)
    EXPECT_EQ(versions[i], i + 2) << "answered in arrival order, each on the version before it";
}

} // namespace
