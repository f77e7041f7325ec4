// Process managers on the bank's money transfers: the happy path, a refused
// withdrawal, compensation of a refused deposit, a saga killed midway that
// finishes after its restart, passivation, and the error policy.

#include <mutex>
#include <optional>
#include <thread>

#include <future>
#include <limits>

#include <gtest/gtest.h>

#include "../../examples/bank/routes.hpp"
#include "../../examples/bank/transfer_saga.hpp"
#include "../support/checked.hpp"
#include "../support/eventually.hpp"
#include "../support/status_wait.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

using sourcery::testing::reaches;
using sourcery::testing::stops;

struct unrouted { std::string why; };

/// Opens an account, then asks for a command nobody routes.
struct lost_saga {
  static constexpr const char* process_name = "test.lost";
  using event = std::variant<account_opened>;
  std::string owner;
  MSGPACK_DEFINE_MAP(owner);
  static sourcery::interest interested(const account_opened& e) { return sourcery::interest::start(e.owner.value()); }
  sourcery::commands handle(const account_opened&) const { return {sourcery::command(unrouted{"test"})}; }
};

/// An aggregate whose command takes its time: `nap` sleeps in `execute`.
struct nap {
  std::string id;
  int ms = 0;
  SOURCERY_FIELDS(id, ms)
};
struct napped {
  static constexpr const char* type_name = "test.napped";
  int ms = 0;
  MSGPACK_DEFINE_MAP(ms);
};
struct sleeper {
  using event = std::variant<napped>;
  int naps = 0;
  MSGPACK_DEFINE_MAP(naps);
  sourcery::outcome<event> execute(const nap& c) const {
    std::this_thread::sleep_for(std::chrono::milliseconds{c.ms});
    return napped{c.ms};
  }
  void apply(const napped&) { ++naps; }
};

/// For each opened account, a nap far longer than its event timeout.
struct slow_saga {
  static constexpr const char* process_name = "test.slow";
  using event = std::variant<account_opened>;
  std::string owner;
  MSGPACK_DEFINE_MAP(owner);
  static sourcery::interest interested(const account_opened& e) { return sourcery::interest::start(e.owner.value()); }
  sourcery::commands handle(const account_opened& e) const { return {sourcery::command(nap{e.owner.value(), 150})}; }
};

/// Starts an instance per opened account and never stops it: only idleness ends it.
struct greeter {
  static constexpr const char* process_name = "test.greeter";
  using event = std::variant<account_opened>;
  std::string owner;
  MSGPACK_DEFINE_MAP(owner);
  static sourcery::interest interested(const account_opened& e) { return sourcery::interest::start(e.owner.value()); }
  sourcery::commands handle(const account_opened&) const { return {}; }
};

class transfers : public ::testing::Test {
protected:
  void start(process_options opts = {}) {
    application_config cfg;
    cfg.data_dir = (dir_ / "data").string();
    auto app = application::start(cfg, bank::routes());
    ASSERT_TRUE(app) << describe_error(app.error());
    app_ = std::move(*app);
    auto pm = app_->add_process_manager<transfer_saga>(opts);
    ASSERT_TRUE(pm) << describe_error(pm.error());
    status_ = *pm;
  }

  void open(const std::string& id, int64_t balance) {
    ASSERT_TRUE(app_->dispatch(open_account{id, "owner"}));
    if (balance > 0) {
      ASSERT_TRUE(app_->dispatch(deposit{id, balance}));
    }
  }

  int64_t balance(const std::string& id) {
    auto a = app_->aggregate_state<account>("account-" + id);
    EXPECT_TRUE(a);
    return a ? a->balance : -1;
  }

  transfer::stage stage_of(const std::string& id) {
    auto t = app_->aggregate_state<transfer>("transfer-" + id);
    EXPECT_TRUE(t);
    return t ? t->at : transfer::stage::none;
  }

  /// Waits (bounded) for the transfer to settle: each new event of the
  /// log wakes it, no polling.
  transfer::stage settled(const std::string& id) {
    auto until = std::chrono::steady_clock::now() + 5s;
    for (;;) {
      auto s = stage_of(id);
      if (s == transfer::stage::completed || s == transfer::stage::failed || std::chrono::steady_clock::now() > until)
        return s;
      app_->store().wait_for_position(app_->store().head_position() + 1, 100ms);
    }
  }

  bool caught_up() { return reaches(*status_, app_->store().head_position()); }

  sourcery::testing::temp_dir dir_;
  std::unique_ptr<application> app_;
  std::shared_ptr<handler_status> status_;
};

TEST_F(transfers, money_moves_and_the_transfer_completes_with_causation_recorded) {
  start();
  open("a", 100);
  open("b", 0);
  ASSERT_TRUE(app_->dispatch(request_transfer{"t1", "a", "b", 30}));
  EXPECT_EQ(settled("t1"), transfer::stage::completed);
  EXPECT_EQ(balance("a"), 70);
  EXPECT_EQ(balance("b"), 30);
  // The saga's commands carry the causing event's id and its correlation.
  auto requested = app_->store().read_stream("transfer-t1", 1, 1);
  auto withdrawn = app_->store().read_stream("account-a", 3, 1);
  ASSERT_TRUE(requested && withdrawn && requested->size() == 1 && withdrawn->size() == 1);
  EXPECT_EQ(withdrawn->front().type, "bank.money_withdrawn");
  EXPECT_EQ(withdrawn->front().causation_id, requested->front().event_id.to_string());
  EXPECT_EQ(withdrawn->front().correlation_id, requested->front().correlation_id);
  ASSERT_TRUE(caught_up());
  auto saved = (*app_->read_models())->scan("process:bank.transfers", "instances");
  ASSERT_TRUE(saved);
  EXPECT_TRUE(saved->empty()) << "a finished saga's state is deleted";
}

TEST_F(transfers, a_refused_withdrawal_fails_the_transfer) {
  start();
  open("poor", 10);
  open("rich", 0);
  ASSERT_TRUE(app_->dispatch(request_transfer{"t2", "poor", "rich", 50}));
  EXPECT_EQ(settled("t2"), transfer::stage::failed);
  EXPECT_EQ(balance("poor"), 10);
  EXPECT_EQ(balance("rich"), 0);
}

TEST_F(transfers, a_refused_deposit_is_compensated_by_a_refund) {
  start();
  open("src", 100);
  ASSERT_TRUE(app_->dispatch(request_transfer{"t3", "src", "nobody", 40})); // "nobody" was never opened
  EXPECT_EQ(settled("t3"), transfer::stage::failed);
  ASSERT_TRUE(caught_up());
  EXPECT_EQ(balance("src"), 100) << "withdrawn, then refunded";
  auto events = app_->store().read_stream("account-src", 1, 10);
  ASSERT_TRUE(events);
  EXPECT_EQ(events->size(), 4u) << "opened, deposited, withdrawn, refunded";
}

TEST_F(transfers, a_saga_killed_midway_finishes_after_its_restart) {
  start();
  for (int a = 0; a < 10; ++a)
    open("acc" + std::to_string(a), 1000);
  for (int t = 0; t < 100; ++t) {
    ASSERT_TRUE(app_->dispatch(
      request_transfer{"k" + std::to_string(t), "acc" + std::to_string(t % 10), "acc" + std::to_string((t + 3) % 10), 7}));
    if (t % 20 == 10) {
      auto kids = app_->root().which_children();
      ASSERT_TRUE(kids);
      for (auto& k : *kids)
        if (k.id == "process:bank.transfers" && k.actor)
          caf::anon_send_exit(k.actor, caf::exit_reason::kill);
    }
  }
  for (int t = 0; t < 100; ++t)
    ASSERT_EQ(settled("k" + std::to_string(t)), transfer::stage::completed) << "transfer " << t;
  int64_t total = 0;
  for (int a = 0; a < 10; ++a) {
    EXPECT_EQ(balance("acc" + std::to_string(a)), 1000) << "each account sent and received 10 x 7";
    total += balance("acc" + std::to_string(a));
  }
  EXPECT_EQ(total, 10'000);
}

TEST_F(transfers, a_restarted_application_resumes_the_saga_from_its_saved_state) {
  start();
  open("x", 50);
  open("y", 0);
  ASSERT_TRUE(caught_up());
  app_->stop();
  app_.reset();
  {
    // Another instance of the application requests the transfer while the
    // process manager is not running...
    application_config cfg;
    cfg.data_dir = (dir_ / "data").string();
    auto quiet = application::start(cfg, bank::routes());
    ASSERT_TRUE(quiet);
    ASSERT_TRUE((*quiet)->dispatch(request_transfer{"r1", "x", "y", 20}));
  }
  start(); // ...and the process manager picks it up where it stopped.
  EXPECT_EQ(settled("r1"), transfer::stage::completed);
  EXPECT_EQ(balance("y"), 20);
}

TEST_F(transfers, idle_instances_passivate_and_reopen_from_their_saved_state) {
  process_options opts;
  opts.idle_timeout = 20ms;
  start(opts);
  open("p", 100);
  open("q", 0);
  ASSERT_TRUE(app_->dispatch(request_transfer{"i1", "p", "q", 5}));
  EXPECT_EQ(settled("i1"), transfer::stage::completed);
  EXPECT_EQ(balance("q"), 5);
}

TEST(process_errors, a_failing_command_is_retried_then_stops_the_process_manager) {
  sourcery::testing::temp_dir dir;
  application_config cfg;
  cfg.data_dir = (dir / "data").string();
  auto app = application::start(cfg, bank::routes());
  ASSERT_TRUE(app);
  process_options opts;
  opts.on_error.max_retries = 2;
  opts.on_error.initial_delay = 1ms;
  auto status = (*app)->add_process_manager<lost_saga>(opts);
  ASSERT_TRUE(status);
  ASSERT_TRUE((*app)->dispatch(open_account{"z", "zed"}));
  ASSERT_TRUE(stops(**status));
  EXPECT_NE(describe_error((*status)->stopped()).find("no route"), std::string::npos)
    << describe_error((*status)->stopped());
  // The status says stopped before the actor has exited and its supervisor
  // has heard of it: wait for the supervisor to see it gone.
  auto child = [&]() -> std::optional<supervision::child_info> {
    auto kids = (*app)->root().which_children();
    if (kids)
      for (auto& k : *kids)
        if (k.id == "process:test.lost")
          return k;
    return std::nullopt;
  };
  for (int i = 0; i < 400 && child() && child()->actor; ++i)
    std::this_thread::sleep_for(5ms);
  auto lost = child();
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->actor, nullptr) << "stopped for good";
  EXPECT_EQ(lost->restarts, 0u) << "not restarted";
}

} // namespace

namespace {

/// slow_saga with `opts`; the events it saw through the failure observer.
struct slow_run {
  sourcery::testing::temp_dir dir;
  std::unique_ptr<application> app;
  std::shared_ptr<handler_status> status;
  std::shared_ptr<std::vector<std::string>> failures = std::make_shared<std::vector<std::string>>();
  std::shared_ptr<std::mutex> mtx = std::make_shared<std::mutex>();

  explicit slow_run(process_options opts) {
    application_config cfg;
    cfg.data_dir = (dir / "data").string();
    auto routes = bank::routes();
    routes.route<sleeper, nap>(&nap::id, "sleeper-");
    app = sourcery::testing::checked(application::start(cfg, routes), "start the application");
    opts.on_error.observer = [f = failures, m = mtx](const handler_failure& h) {
      std::lock_guard guard{*m};
      f->push_back(describe_error(h.error));
    };
    auto pm = app->add_process_manager<slow_saga>(opts);
    EXPECT_TRUE(pm);
    status = *pm;
  }
  size_t failed() {
    std::lock_guard guard{*mtx};
    return failures->size();
  }
};

process_options timing_out(error_action::kind then) {
  process_options opts;
  opts.event_timeout = 40ms;
  opts.on_error.max_retries = 1;
  opts.on_error.initial_delay = 1ms;
  opts.on_error.then = then;
  return opts;
}

} // namespace

TEST(process_timeouts, an_event_past_its_timeout_fails_and_the_policy_stops_the_saga) {
  slow_run run{timing_out(error_action::kind::stop)};
  ASSERT_TRUE(run.app->dispatch(open_account{"n", "nap"}));
  ASSERT_TRUE(stops(*run.status));
  EXPECT_NE(describe_error(run.status->stopped()).find("event timeout of 40 ms"), std::string::npos)
    << describe_error(run.status->stopped());
  ASSERT_EQ(run.failed(), 2u) << "the first try and one retry, each timed out";
  EXPECT_NE((*run.failures)[0].find("did not finish event 1 (bank.account_opened)"), std::string::npos)
    << (*run.failures)[0];
}

TEST(process_timeouts, a_skipped_event_lets_the_saga_go_on_and_late_answers_are_dropped) {
  slow_run run{timing_out(error_action::kind::skip)};
  ASSERT_TRUE(run.app->dispatch(open_account{"a", "ann"}));
  ASSERT_TRUE(run.app->dispatch(open_account{"b", "bob"}));
  auto head = run.app->store().head_position();
  reaches(*run.status, head);
  EXPECT_FALSE(run.status->stopped());
  EXPECT_GE(run.status->position(), head) << "both events skipped after their timeouts";
  std::this_thread::sleep_for(400ms); // the naps end and answer, late
  EXPECT_EQ(run.failed(), 4u) << "two tries per event, and no late answer counted as a result";
  EXPECT_FALSE(run.status->stopped());
}

TEST(process_idle, an_idle_instance_is_passivated_after_its_idle_timeout) {
  sourcery::testing::temp_dir dir;
  application_config cfg;
  cfg.data_dir = (dir / "data").string();
  auto app = application::start(cfg, bank::routes());
  ASSERT_TRUE(app);
  process_options opts;
  opts.idle_timeout = 150ms;
  auto status = (*app)->add_process_manager<greeter>(opts);
  ASSERT_TRUE(status);
  auto& actors = (*app)->system().registry();
  ASSERT_TRUE((*app)->dispatch(open_account{"g", "gus"}));
  ASSERT_TRUE(reaches(**status, (*app)->store().head_position()));
  auto with_instance = actors.running();
  // Past the idle timeout (and the next tick) the instance ends.
  EXPECT_TRUE(sourcery::testing::eventually([&] { return actors.running() == with_instance - 1; }, 10s))
    << "the instance did not end: " << actors.running() << " actors, " << with_instance << " with it";
  // Its saved state reopens it for the next event of its id.
  ASSERT_TRUE((*app)->dispatch(open_account{"h", "hal"}));
  ASSERT_TRUE(reaches(**status, (*app)->store().head_position()));
  EXPECT_EQ(actors.running(), with_instance + 1) << "hal's instance, and hal's account";
}
