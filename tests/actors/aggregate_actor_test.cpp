// Aggregates as actors on the real scheduler and a real LMDB store: strictly
// serial commands under concurrency, many live aggregates, passivation and
// reopening, a crash inside execute, and envelopes that do not decode.
// (Lifespans to the millisecond: aggregate_clock_test.cpp, on the test clock.)

#include <atomic>
#include <future>

#include <gtest/gtest.h>

#include "../support/temp_dir.hpp"
#include "../../examples/bank/bank.hpp"
#include "sourcery/actors/aggregates/detail/aggregate_host.hpp"
#include "sourcery/actors/aggregates/detail/aggregate_registry.hpp"
#include "sourcery/persistence/lmdb_store.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

struct explode { SOURCERY_FIELDS() };

/// An account whose `explode` command throws: a bug in domain code.
struct fragile_account : account {
  using account::execute;
  outcome<event> execute(const explode&) const { throw std::runtime_error("bug in execute"); }
};

using reply = std::function<void(caf::expected<dispatch_result>)>;

template <class A>
class aggregate_world : public ::testing::Test {
protected:
  void open(std::chrono::milliseconds lifespan = 0ms, std::optional<sourcery::lifespan> after_error = {}) {
    cfg_.set("logger.verbosity", caf::atom("quiet"));
    sys_.emplace(cfg_);
    ASSERT_FALSE(register_events<A>(types_));
    auto s = persistence::lmdb_store::open({.path = (dir_ / "store").string()});
    ASSERT_TRUE(s) << persistence::describe(s.error());
    store_ = std::move(*s);
    aggregate_settings settings;
    settings.lifespan = lifespan.count() > 0 ? sourcery::lifespan::timeout(lifespan) : sourcery::lifespan::infinite();
    settings.after_error = after_error;
    host_ = std::make_unique<detail::aggregate_host_of<A>>("account", settings, *store_, types_);
    handle<open_account>();
    handle<deposit>();
    handle<withdraw>();
    if constexpr (executes<A, explode>)
      handle<explode>();
    supervision::supervisor_flags f;
    f.name = "aggregates";
    f.how = supervision::strategy::simple_one_for_one;
    auto sup = supervision::supervisor::start(*sys_, f, {host_->actor_template()});
    ASSERT_TRUE(sup) << supervision::describe(sup.error());
    aggregates_.emplace(*sup);
    registry_ = detail::spawn_aggregate_registry(*sys_, aggregates_->handle());
  }

  template <class C>
  void handle() {
    auto name = demangled(typeid(C));
    host_->add(name, detail::executor_for<A, C>(name, [](const A& a, const C& c) { return a.execute(c); }));
  }

  static std::string demangled(const std::type_info& t) { return t.name(); }

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
  static command_envelope envelope(const std::string& stream, const C& cmd) {
    command_envelope e;
    e.aggregate_type = "account";
    e.stream_id = stream;
    e.command_type = demangled(typeid(C));
    e.payload = encode_command(cmd);
    return e;
  }

  /// Sends `env` to the registry; `done` gets the answer, on an actor's thread.
  void send(command_envelope env, reply done) {
    caf::anon_send(registry_, detail::dispatch_atom::value,
                   detail::command_delivery{std::move(env), std::make_shared<detail::reply_slot>(std::move(done))});
  }

  caf::expected<dispatch_result> ask(command_envelope env) {
    auto answered = std::make_shared<std::promise<caf::expected<dispatch_result>>>();
    auto f = answered->get_future();
    send(std::move(env), [answered](caf::expected<dispatch_result> r) { answered->set_value(std::move(r)); });
    if (f.wait_for(10s) != std::future_status::ready)
      return caf::make_error(caf::sec::request_timeout, "no answer within 10 s");
    return f.get();
  }

  template <class C>
  caf::expected<dispatch_result> dispatch(const std::string& stream, const C& cmd) {
    return ask(envelope(stream, cmd));
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
  std::unique_ptr<detail::aggregate_host_of<A>> host_;
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
  auto all_answered = std::make_shared<std::promise<void>>();
  auto left = std::make_shared<std::atomic<int>>(n);
  // 1,000 commands in flight at once from 10 threads.
  std::vector<std::thread> senders;
  for (int d = 0; d < 10; ++d)
    senders.emplace_back([&] {
      for (int i = 0; i < n / 10; ++i)
        send(envelope("account-1", deposit{"account-1", 1}), [=](caf::expected<dispatch_result> r) {
          if (r && r->accepted)
            ++*accepted;
          if (--*left == 0)
            all_answered->set_value();
        });
    });
  for (auto& t : senders)
    t.join();
  ASSERT_EQ(all_answered->get_future().wait_for(30s), std::future_status::ready);
  EXPECT_EQ(accepted->load(), n);
  auto info = store_->stream_info("account-1");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->version, static_cast<uint64_t>(n + 1)) << "a lost update or a duplicate";
  auto state = host_->repo().load("account-1");
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
  auto accepted = std::make_shared<std::atomic<int>>(0);
  auto all_answered = std::make_shared<std::promise<void>>();
  auto left = std::make_shared<std::atomic<int>>(n);
  for (int i = 0; i < n; ++i) {
    auto id = "account-" + std::to_string(i);
    send(envelope(id, open_account{id, "owner"}), [=](caf::expected<dispatch_result> r) {
      if (r && r->accepted)
        ++*accepted;
      if (--*left == 0)
        all_answered->set_value();
    });
  }
  ASSERT_EQ(all_answered->get_future().wait_for(60s), std::future_status::ready);
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

using fragile_accounts = aggregate_world<fragile_account>;

TEST_F(fragile_accounts, a_crash_in_execute_fails_that_command_only) {
  open();
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "dan"}));
  ASSERT_TRUE(dispatch("acc", deposit{"acc", 25}));
  auto crashed = dispatch("acc", explode{});
  ASSERT_FALSE(crashed) << "a crash must reach the caller as an error";
  auto after = dispatch("acc", withdraw{"acc", 25});
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
  std::promise<caf::expected<dispatch_result>> answered;
  send(envelope("acc", open_account{"acc", "eve"}),
       [&answered](caf::expected<dispatch_result> r) { answered.set_value(std::move(r)); });
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

TEST_F(accounts, envelopes_that_do_not_decode_or_name_no_route_are_errors_not_crashes) {
  open();
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "fay"}));
  auto garbage = envelope("acc", deposit{"acc", 5});
  garbage.payload = {0xc1, 0xff, 0x00}; // 0xc1 is never used in msgpack
  auto r = ask(garbage);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::malformed_command) << describe_error(r.error());
  auto wrong_shape = envelope("acc", deposit{"acc", 5});
  wrong_shape.payload = encode_command(std::vector<int>{1, 2, 3}); // an array, not a map
  r = ask(wrong_shape);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::malformed_command);
  auto unknown = envelope("acc", deposit{"acc", 5});
  unknown.command_type = "bank.close_account";
  r = ask(unknown);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::unregistered_command);
  EXPECT_NE(describe_error(r.error()).find("bank.close_account"), std::string::npos);
  // The aggregate lives on, its state intact.
  auto ok = dispatch("acc", deposit{"acc", 5});
  ASSERT_TRUE(ok && ok->accepted);
  EXPECT_EQ(ok->version, 2u);
}

TEST_F(accounts, a_command_past_its_deadline_is_skipped_unexecuted) {
  open();
  auto late = envelope("acc", open_account{"acc", "gus"});
  late.deadline = std::chrono::steady_clock::now() - 1ms;
  auto r = ask(late);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), caf::sec::request_timeout);
  EXPECT_FALSE(store_->stream_info("acc")->exists);
}

TEST_F(accounts, an_answer_carries_the_state_or_the_events_when_the_envelope_asks) {
  open();
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "hal"}));
  auto with_state = envelope("acc", deposit{"acc", 7});
  with_state.returns = returning::state;
  auto r = ask(with_state);
  ASSERT_TRUE(r && r->accepted);
  auto state = r->state_as<account>();
  ASSERT_TRUE(state);
  EXPECT_EQ(state->balance, 7);
  auto with_events = envelope("acc", deposit{"acc", 8});
  with_events.returns = returning::events;
  r = ask(with_events);
  ASSERT_TRUE(r && r->accepted);
  ASSERT_EQ(r->events.size(), 1u);
  EXPECT_EQ(r->events[0].type, "bank.money_deposited");
  EXPECT_EQ(r->events[0].stream_version, 3u);
}

using touchy_accounts = aggregate_world<account>;

TEST_F(touchy_accounts, after_error_chooses_the_lifespan_after_a_rejection) {
  open(0ms, sourcery::lifespan::stop()); // stays forever, except after a refused command
  ASSERT_TRUE(dispatch("acc", open_account{"acc", "ivy"}));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(live_aggregates(), 1u);
  auto r = dispatch("acc", withdraw{"acc", 1000});
  ASSERT_TRUE(r && !r->accepted);
  size_t live = 1;
  for (int i = 0; i < 2000 && live != 0; ++i) {
    std::this_thread::sleep_for(1ms);
    live = live_aggregates();
  }
  EXPECT_EQ(live, 0u) << "after_error: stop";
}

} // namespace
