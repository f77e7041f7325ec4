// The promises an application keeps when things go wrong: every dispatch is
// answered within its deadline, bad identities are refused before anything
// runs, a caller's callback cannot take the tree down, and a tree that gives
// up is noticed (failure(), on_failure, dispatches refused at once).

#include <atomic>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "../../examples/bank/balances.hpp"
#include "../../examples/bank/routes.hpp"
#include "../support/temp_dir.hpp"
#include "../support/tree_killer.hpp"
#include "sourcery/persistence/faulty_store.hpp"
#include "sourcery/persistence/memory_store.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/http/gateway.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

// -- a slow aggregate ------------------------------------------------------------

struct nap_taken {
  static constexpr const char* type_name = "test.nap_taken";
  int64_t ms = 0;
  MSGPACK_DEFINE_MAP(ms);
};

struct take_nap {
  std::string sloth;
  int64_t ms = 0;
  SOURCERY_FIELDS(sloth, ms)
};

struct sloth {
  using event = std::variant<nap_taken>;
  int64_t naps = 0;
  outcome<event> execute(const take_nap& c) const {
    std::this_thread::sleep_for(std::chrono::milliseconds{c.ms});
    return nap_taken{c.ms};
  }
  void apply(const nap_taken&) { ++naps; }
};

router sloth_routes() {
  router r = bank::routes();
  r.route<sloth, take_nap>(&take_nap::sloth, "sloth-");
  return r;
}

std::unique_ptr<application> start_sloths(const sourcery::testing::temp_dir& dir, application_config cfg = {}) {
  cfg.data_dir = (dir / "data").string();
  auto app = application::start(std::move(cfg), sloth_routes());
  EXPECT_TRUE(app) << describe_error(app.error());
  return app ? std::move(*app) : nullptr;
}

using clock = std::chrono::steady_clock;

} // namespace

TEST(deadlines, dispatch_async_is_answered_within_its_timeout) {
  sourcery::testing::temp_dir dir;
  auto app = start_sloths(dir);
  dispatch_options opts;
  opts.timeout = 200ms;
  std::promise<std::pair<caf::expected<dispatch_result>, clock::duration>> answered;
  auto t0 = clock::now();
  app->dispatch_async(take_nap{"1", 3000}, opts, [&, t0](caf::expected<dispatch_result> r) {
    answered.set_value({std::move(r), clock::now() - t0});
  });
  auto f = answered.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  auto [r, took] = f.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::timeout) << describe_error(r.error());
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 2500ms) << "answered only when the 3 s command ended, not at its 200 ms deadline";
  EXPECT_EQ(app->metrics().commands("timeout"), 1u);
  EXPECT_EQ(http::dispatch_failure(r.error()).status, 504u) << "what the gateway answers";
}

TEST(deadlines, the_blocking_form_counts_its_timeouts_and_a_late_answer_is_dropped) {
  sourcery::testing::temp_dir dir;
  auto app = start_sloths(dir);
  dispatch_options opts;
  opts.timeout = 100ms;
  auto t0 = clock::now();
  auto r = app->dispatch(take_nap{"1", 2000}, opts);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::timeout);
  EXPECT_LT(clock::now() - t0, 1500ms) << "answered at its 100 ms deadline, not when the 2 s nap ended";
  EXPECT_EQ(app->metrics().commands("timeout"), 1u);
  // The command itself ran (it had begun): its answer, later, is dropped
  // and not counted a second time. A second command to the same sloth runs
  // after it, so once that one is answered the late answer has come.
  dispatch_options patient;
  patient.timeout = 10s;
  auto next = app->dispatch(take_nap{"1", 0}, patient);
  ASSERT_TRUE(next) << describe_error(next.error());
  EXPECT_EQ(app->aggregate_state<sloth>("sloth-1")->naps, 2) << "both naps were taken";
  EXPECT_EQ(app->metrics().commands("accepted"), 1u) << "the late answer was not counted";
  EXPECT_EQ(app->metrics().commands("timeout"), 1u);
}

TEST(deadlines, a_command_whose_deadline_passed_while_queued_is_not_executed) {
  sourcery::testing::temp_dir dir;
  auto app = start_sloths(dir);
  std::promise<caf::expected<dispatch_result>> first;
  dispatch_options slow;
  slow.timeout = 5s;
  app->dispatch_async(take_nap{"1", 500}, slow, [&](caf::expected<dispatch_result> r) { first.set_value(std::move(r)); });
  dispatch_options hasty;
  hasty.timeout = 100ms;
  auto r = app->dispatch(take_nap{"1", 0}, hasty); // queued behind the nap
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::timeout);
  auto f = first.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  ASSERT_TRUE(f.get());
  // Only the first nap is stored: the hasty one was skipped, not run late.
  auto after = app->dispatch(take_nap{"1", 0});
  ASSERT_TRUE(after && after->accepted);
  EXPECT_EQ(after->version, 2u);
}

TEST(deadlines, thousands_of_dispatches_each_answered_once) {
  sourcery::testing::temp_dir dir;
  auto app = start_sloths(dir);
  ASSERT_TRUE(app->dispatch(open_account{"a", "ann"}));
  std::atomic<int> answers{0};
  std::atomic<int> accepted{0};
  constexpr int n = 5000;
  dispatch_options opts;
  // One aggregate takes them one at a time: under a sanitizer on a loaded
  // 2-core machine that is a few hundred a second, so the deadline leaves
  // room for all (the test is about answers, not speed).
  opts.timeout = 60s;
  for (int i = 0; i < n; ++i)
    app->dispatch_async(deposit{"a", 1}, opts, [&](caf::expected<dispatch_result> r) {
      if (r && r->accepted)
        ++accepted;
      ++answers;
    });
  for (int i = 0; i < 6000 && answers.load() < n; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(answers.load(), n);
  EXPECT_EQ(accepted.load(), n);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(answers.load(), n); // none answered twice
  EXPECT_EQ(app->aggregate_state<account>("account-a")->balance, n);
  app->stop(); // before the counters its callbacks use go out of scope
}

TEST(deadlines, stopping_with_thousands_of_dispatches_in_flight_answers_each_once) {
  std::atomic<int> answers{0}; // outlives the application: its last callbacks run in stop()
  std::atomic<int> twice{0};
  sourcery::testing::temp_dir dir;
  auto app = start_sloths(dir);
  ASSERT_TRUE(app->dispatch(open_account{"a", "ann"}));
  constexpr int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto once = std::make_shared<std::atomic<bool>>(false);
    app->dispatch_async(deposit{"a" + std::to_string(i % 64), 1}, {}, [&, once](caf::expected<dispatch_result>) {
      if (once->exchange(true))
        ++twice;
      ++answers;
    });
  }
  app->stop();
  EXPECT_EQ(answers.load(), n) << "every dispatch answered by the time stop returns";
  EXPECT_EQ(twice.load(), 0);
}

TEST(identities, an_empty_identity_is_refused_before_anything_runs) {
  sourcery::testing::temp_dir dir;
  auto app = start_sloths(dir);
  auto r = app->dispatch(open_account{"", "nobody"});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::invalid_identity);
  EXPECT_NE(describe_error(r.error()).find("invalid_aggregate_identity"), std::string::npos);
  EXPECT_EQ(app->store().head_position(), 0u);
  EXPECT_FALSE(app->store().stream_info("account-")->exists);
}

TEST(callbacks, a_throwing_callback_is_logged_and_harms_nothing) {
  sourcery::testing::temp_dir dir;
  std::vector<std::string> lines;
  std::mutex mtx;
  application_config cfg;
  cfg.log.sink = [&](std::string_view line) {
    std::lock_guard guard{mtx};
    lines.emplace_back(line);
  };
  auto app = start_sloths(dir, cfg);
  ASSERT_TRUE(app->add_projection<balances>({}, true));
  dispatch_options strong;
  strong.consistency_level = consistency::strong;
  for (int i = 0; i < 15; ++i) { // more than the root's restart intensity
    std::promise<void> ran;
    app->dispatch_async(open_account{std::to_string(i), "x"}, strong, [&](caf::expected<dispatch_result>) {
      ran.set_value();
      throw std::runtime_error("the caller's bug");
    });
    ASSERT_EQ(ran.get_future().wait_for(5s), std::future_status::ready);
  }
  EXPECT_TRUE(app->running());
  EXPECT_FALSE(app->failure());
  auto r = app->dispatch(deposit{"3", 5}, strong);
  ASSERT_TRUE(r && r->accepted);
  std::lock_guard guard{mtx};
  size_t logged = 0;
  for (auto& l : lines)
    logged += l.find("a dispatch callback threw") != std::string::npos ? 1 : 0;
  EXPECT_EQ(logged, 15u);
}

TEST(tree_failure, a_tree_that_gives_up_is_noticed_and_refuses_work_at_once) {
  sourcery::testing::temp_dir dir;
  std::promise<caf::error> told;
  application_config cfg;
  cfg.on_failure = [&](const caf::error& why) { told.set_value(why); };
  auto app = start_sloths(dir, cfg);
  ASSERT_TRUE(app->add_projection<balances>());
  ASSERT_TRUE(app->dispatch(open_account{"1", "ann"}));
  EXPECT_FALSE(app->failure());
  EXPECT_FALSE(app->await_failure(10ms));
  // Kill the projection more often than app_root tolerates (10 in 10 s).
  sourcery::testing::kill_until_tree_fails(*app, std::string{"projection:"} + balances::projection_name);
  auto why = app->await_failure(5s);
  ASSERT_TRUE(why) << "the tree did not give up";
  EXPECT_EQ(code_of_dispatch(why), dispatch_errc::unavailable);
  EXPECT_FALSE(app->running());
  auto f = told.get_future();
  ASSERT_EQ(f.wait_for(1s), std::future_status::ready);
  EXPECT_EQ(code_of_dispatch(f.get()), dispatch_errc::unavailable);
  auto t0 = clock::now();
  auto r = app->dispatch(deposit{"1", 5});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::unavailable);
  EXPECT_LT(clock::now() - t0, 1s) << "refused at once, not after its 5 s timeout";
  app->stop(); // still stops cleanly
}

// -- the upper layers against a failing store (faulty_store) ----------------------

namespace {

struct faulty_app {
  std::shared_ptr<persistence::memory_store> inner = std::make_shared<persistence::memory_store>();
  std::shared_ptr<persistence::faulty_store> store = std::make_shared<persistence::faulty_store>(inner);
  sourcery::testing::temp_dir dir;
  std::unique_ptr<application> app;

  faulty_app() {
    application_config cfg;
    cfg.store = store;
    cfg.read_model_dir = (dir / "models").string();
    auto a = application::start(std::move(cfg), sloth_routes());
    EXPECT_TRUE(a) << describe_error(a.error());
    if (a)
      app = std::move(*a);
  }
  ~faulty_app() {
    if (app)
      app->stop();
  }
};

caf::error disk_full() {
  return persistence::make_error(persistence::store_errc::store_full, "injected: no space left on device");
}

} // namespace

TEST(failing_store, a_failed_append_is_a_clear_error_and_the_next_command_runs) {
  faulty_app f;
  ASSERT_TRUE(f.app->dispatch(open_account{"1", "ann"}));
  f.store->fail_appends(2, disk_full());
  for (int i = 0; i < 2; ++i) {
    auto r = f.app->dispatch(deposit{"1", 10});
    ASSERT_FALSE(r);
    EXPECT_EQ(persistence::code_of(r.error()), persistence::store_errc::store_full) << describe_error(r.error());
  }
  auto ok = f.app->dispatch(deposit{"1", 10});
  ASSERT_TRUE(ok && ok->accepted);
  EXPECT_EQ(ok->version, 2u); // the failed ones applied nothing
  EXPECT_EQ(f.app->aggregate_state<account>("account-1")->balance, 10);
}

TEST(failing_store, conflicts_past_the_retry_budget_are_a_clear_error_and_the_budget_is_per_command) {
  faulty_app f;
  ASSERT_TRUE(f.app->dispatch(open_account{"1", "ann"}));
  auto conflict = persistence::make_error(persistence::store_errc::wrong_expected_version, "injected conflict");
  // The default budget is 3 retries: 4 conflicts in a row exhaust it.
  f.store->fail_appends(4, conflict);
  auto r = f.app->dispatch(deposit{"1", 10});
  ASSERT_FALSE(r);
  EXPECT_EQ(persistence::code_of(r.error()), persistence::store_errc::wrong_expected_version);
  EXPECT_NE(describe_error(r.error()).find("still conflicted after 3 retries"), std::string::npos)
    << describe_error(r.error());
  // 3 conflicts: the 4th try commits. The budget starts from zero again for
  // this command, and again for the next.
  for (int round = 0; round < 2; ++round) {
    f.store->fail_appends(3, conflict);
    auto ok = f.app->dispatch(deposit{"1", 1});
    ASSERT_TRUE(ok && ok->accepted) << (ok ? "" : describe_error(ok.error()));
  }
  EXPECT_EQ(f.app->aggregate_state<account>("account-1")->balance, 2);
}

TEST(failing_store, a_store_that_stops_answering_gets_timeouts_then_heals) {
  faulty_app f;
  ASSERT_TRUE(f.app->dispatch(open_account{"1", "ann"}));
  f.store->stop_answering();
  dispatch_options opts;
  opts.timeout = 200ms;
  auto t0 = clock::now();
  auto r = f.app->dispatch(deposit{"1", 10}, opts);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::timeout);
  EXPECT_LT(clock::now() - t0, 1s);
  f.store->resume(); // the held append is written now: a timeout means "unknown", not "not done"
  ASSERT_TRUE(f.store->wait_for_position(2, 2s));
  auto next = f.app->dispatch(deposit{"1", 5});
  ASSERT_TRUE(next && next->accepted) << (next ? "" : describe_error(next.error()));
  EXPECT_EQ(next->version, 3u);
  EXPECT_EQ(f.app->aggregate_state<account>("account-1")->balance, 15);
  EXPECT_EQ(f.app->metrics().commands("timeout"), 1u);
}

TEST(failing_store, slow_commits_are_answered_in_order_within_their_deadline) {
  faulty_app f;
  f.store->delay_commits(50ms);
  std::atomic<int> ok{0};
  std::atomic<int> answers{0};
  for (int i = 0; i < 20; ++i)
    f.app->dispatch_async(open_account{std::to_string(i), "x"}, {}, [&](caf::expected<dispatch_result> r) {
      ok += r && r->accepted ? 1 : 0;
      ++answers;
    });
  for (int i = 0; i < 500 && answers.load() < 20; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(ok.load(), 20);
  EXPECT_EQ(f.store->head_position(), 20u);
  f.app->stop(); // before the counters its callbacks use go out of scope
}

TEST(failing_store, projections_and_handlers_retry_storage_failures_and_catch_up) {
  faulty_app f;
  std::atomic<int> storage_failures{0};
  handler_options opts;
  opts.on_error.initial_delay = 5ms;
  opts.on_error.max_delay = 20ms;
  opts.on_error.storage_observer = [&](const std::string&, const caf::error&, uint32_t, std::chrono::milliseconds) {
    ++storage_failures;
  };
  auto status = f.app->add_projection<balances>(opts, true);
  ASSERT_TRUE(status);
  ASSERT_TRUE(f.app->dispatch(open_account{"1", "ann"}));
  // Reads fail 30 times (of $all by the projection, or of the account's
  // stream): more than app_root would survive as crashes.
  f.store->fail_reads(30, persistence::make_error(persistence::store_errc::io_error, "injected: EIO"));
  dispatch_options strong;
  strong.consistency_level = consistency::strong;
  strong.consistency_timeout = 10s;
  caf::expected<dispatch_result> r = caf::error{};
  for (int i = 0; i < 40 && !r; ++i) // the aggregate's own reads may fail first
    r = f.app->dispatch(deposit{"1", 25}, strong);
  ASSERT_TRUE(r && r->accepted) << (r ? "" : describe_error(r.error()));
  EXPECT_GE(storage_failures.load(), 1);
  EXPECT_FALSE(f.app->failure());
  EXPECT_FALSE((*status)->storage_trouble()); // healed
  auto models = f.app->read_models();
  ASSERT_TRUE(models);
  auto row = (*models)->get(balances::projection_name, "balances", "account-1");
  ASSERT_TRUE(row && *row);
  EXPECT_EQ(**row, "25");
}

TEST(failing_store, a_strong_dispatch_names_the_storage_failure_its_projection_is_retrying) {
  faulty_app f;
  handler_options opts;
  opts.on_error.initial_delay = 20ms;
  opts.on_error.max_delay = 50ms;
  auto status = f.app->add_projection<balances>(opts, true);
  ASSERT_TRUE(status);
  ASSERT_TRUE(f.app->dispatch(open_account{"1", "ann"}));
  // The projection cannot read on (a full disk under it): the command is
  // stored, and the caller learns why its read model lags (HTTP: 507).
  f.store->fail_reads(1000, disk_full());
  dispatch_options strong;
  strong.consistency_level = consistency::strong;
  strong.consistency_timeout = 300ms;
  caf::expected<dispatch_result> r = dispatch_result{};
  for (int i = 0; i < 20 && (r || persistence::code_of(r.error()) != persistence::store_errc::store_full); ++i)
    r = f.app->dispatch(deposit{"1", 5}, strong); // the aggregate's own reads may fail first
  ASSERT_FALSE(r);
  EXPECT_EQ(persistence::code_of(r.error()), persistence::store_errc::store_full) << describe_error(r.error());
  EXPECT_NE(describe_error(r.error()).find("the events were stored"), std::string::npos) << describe_error(r.error());
  EXPECT_EQ(http::dispatch_failure(r.error()).status, 507u);
  f.store->fail_reads(0, {});
  auto healed = f.app->dispatch(deposit{"1", 1}, strong);
  ASSERT_TRUE(healed && healed->accepted) << (healed ? "" : describe_error(healed.error()));
  EXPECT_FALSE((*status)->storage_trouble());
}

TEST(http_status, a_database_out_of_reach_is_503_and_a_slow_one_504_never_500) {
  using persistence::store_errc;
  EXPECT_EQ(http::dispatch_failure(persistence::make_error(store_errc::unavailable, "refused")).status, 503u);
  EXPECT_EQ(http::dispatch_failure(persistence::make_error(store_errc::authentication_failed, "no")).status, 503u);
  EXPECT_EQ(http::dispatch_failure(persistence::make_error(store_errc::timeout, "frozen")).status, 504u);
  EXPECT_EQ(http::dispatch_failure(persistence::make_error(store_errc::unavailable, "x")).code, "store_unavailable");
}
