// LMDB projections: read model and checkpoint in one transaction (a crash
// in the middle of a batch neither loses nor double-applies), policies on a
// failing event, rebuild byte for byte, and time travel.

#include <atomic>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "../../examples/bank/routes.hpp"
#include "../support/checked.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;
using persistence::projection_store;

namespace {

/// Not idempotent on purpose: applying an event twice would show.
struct balance_view {
  static constexpr const char* projection_name = "test.balance_view";
  using event = std::variant<account_opened, money_deposited, money_withdrawn>;

  /// Test hooks: exit the process, or fail, when projecting this amount.
  static inline std::atomic<int64_t> crash_on{-1};
  static inline std::atomic<int64_t> fail_on{-1};

  caf::error add(projection_store::writer& w, const std::string& account, int64_t delta) {
    auto old = w.get("balances", account);
    w.put("balances", account, std::to_string(std::stoll(old.value_or("0")) + delta));
    auto n = w.get("counts", account);
    w.put("counts", account, std::to_string(std::stoll(n.value_or("0")) + 1));
    return {};
  }
  caf::error project(const account_opened& e, const event_context& ctx, projection_store::writer& w) {
    w.put("owners", ctx.stream_id, e.owner.value());
    return {};
  }
  caf::error project(const money_deposited& e, const event_context& ctx, projection_store::writer& w) {
    auto err = add(w, ctx.stream_id, e.amount); // written, but not committed yet...
    if (e.amount == crash_on.load())
      ::_exit(3); // ...when the process dies
    if (e.amount == fail_on.load())
      return caf::make_error(caf::sec::runtime_error, "refused");
    return err;
  }
  caf::error project(const money_withdrawn& e, const event_context& ctx, projection_store::writer& w) {
    return add(w, ctx.stream_id, -e.amount);
  }
};

std::unique_ptr<application> start_app(const std::string& dir) {
  application_config cfg;
  cfg.data_dir = dir;
  auto app = application::start(cfg, bank::routes());
  EXPECT_TRUE(app) << describe_error(app.error());
  return app ? std::move(*app) : nullptr;
}

bool caught_up(application& app, handler_status& s) {
  for (int i = 0; i < 1000 && s.position() < app.store().head_position(); ++i)
    std::this_thread::sleep_for(5ms);
  return s.position() == app.store().head_position();
}

std::string row(application& app, const std::string& table, const std::string& key) {
  auto* models = sourcery::testing::checked(app.read_models(), "open the read models");
  auto r = models->get(balance_view::projection_name, table, key);
  EXPECT_TRUE(r);
  return r && *r ? **r : "";
}

class projections : public ::testing::Test {
protected:
  void TearDown() override {
    balance_view::crash_on = -1;
    balance_view::fail_on = -1;
  }
  sourcery::testing::temp_dir dir_;
};

TEST_F(projections, read_model_follows_the_log_and_strong_dispatch_sees_it) {
  auto app = start_app((dir_ / "data").string());
  auto status = app->add_projection<balance_view>({}, true);
  ASSERT_TRUE(status) << describe_error(status.error());
  dispatch_options strong;
  strong.consistency_level = consistency::strong;
  auto opened = app->dispatch(open_account{"1", "ada"}, strong);
  ASSERT_TRUE(opened) << describe_error(opened.error()) << " / projection at " << (*status)->position();
  for (int i = 1; i <= 10; ++i) {
    ASSERT_TRUE(app->dispatch(deposit{"1", 10}, strong));
    ASSERT_EQ(row(*app, "balances", "account-1"), std::to_string(10 * i));
  }
  ASSERT_TRUE(app->dispatch(withdraw{"1", 25}, strong));
  EXPECT_EQ(row(*app, "balances", "account-1"), "75");
  EXPECT_EQ(row(*app, "owners", "account-1"), "ada");
  auto cp = (*app->read_models())->checkpoint(balance_view::projection_name);
  ASSERT_TRUE(cp && *cp);
  EXPECT_EQ(**cp, app->store().head_position());
}

TEST_F(projections, a_crash_between_read_model_write_and_checkpoint_neither_loses_nor_doubles) {
  auto data = (dir_ / "data").string();
  // The events first, with no projection running.
  {
    auto app = start_app(data);
    ASSERT_TRUE(app->dispatch(open_account{"c", "cat"}));
    for (int i = 1; i <= 300; ++i)
      ASSERT_TRUE(app->dispatch(deposit{"c", i == 150 ? 1000 : 1}));
  }
  // A child process projects them and dies inside the transaction of the
  // batch holding the deposit of 1000, after writing part of it.
  pid_t pid = ::fork();
  if (pid == 0) {
    balance_view::crash_on = 1000;
    auto app = start_app(data);
    handler_options small;
    small.batch_size = 16;
    (void)app->add_projection<balance_view>(small);
    std::this_thread::sleep_for(10s);
    ::_exit(0); // not reached: the projector exits first
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  ASSERT_EQ(WEXITSTATUS(wstatus), 3) << "the child did not crash where intended";
  auto app = start_app(data);
  auto models = app->read_models();
  ASSERT_TRUE(models);
  auto cp = (*models)->checkpoint(balance_view::projection_name);
  ASSERT_TRUE(cp && *cp);
  EXPECT_LT(**cp, 151u) << "the crashed batch must not be committed";
  auto mid = (*models)->get(balance_view::projection_name, "counts", "account-c");
  ASSERT_TRUE(mid && *mid);
  EXPECT_EQ(std::stoull(**mid), **cp - 1) << "exactly the events up to the checkpoint are in the read model";
  // Resumed: every event exactly once.
  auto status = app->add_projection<balance_view>();
  ASSERT_TRUE(status);
  ASSERT_TRUE(caught_up(*app, **status));
  EXPECT_EQ(row(*app, "balances", "account-c"), std::to_string(299 + 1000));
  EXPECT_EQ(row(*app, "counts", "account-c"), "300");
}

TEST_F(projections, a_failing_event_rolls_back_only_itself_under_skip) {
  auto app = start_app((dir_ / "data").string());
  balance_view::fail_on = 7;
  handler_options opts;
  opts.on_error.max_retries = 1;
  opts.on_error.initial_delay = 1ms;
  opts.on_error.then = error_action::kind::skip;
  auto status = app->add_projection<balance_view>(opts);
  ASSERT_TRUE(status);
  ASSERT_TRUE(app->dispatch(open_account{"f", "fay"}));
  ASSERT_TRUE(app->dispatch(deposit{"f", 5}));
  ASSERT_TRUE(app->dispatch(deposit{"f", 7})); // refused by the projector: skipped
  ASSERT_TRUE(app->dispatch(deposit{"f", 11}));
  ASSERT_TRUE(caught_up(*app, **status));
  EXPECT_EQ(row(*app, "balances", "account-f"), "16") << "the refused event's partial writes were rolled back";
  EXPECT_EQ(row(*app, "counts", "account-f"), "2");
}

TEST_F(projections, a_rebuilt_read_model_equals_the_original_byte_for_byte) {
  auto app = start_app((dir_ / "data").string());
  auto status = app->add_projection<balance_view>();
  ASSERT_TRUE(status);
  for (int a = 0; a < 20; ++a) {
    ASSERT_TRUE(app->dispatch(open_account{std::to_string(a), "owner-" + std::to_string(a)}));
    for (int i = 0; i < 10; ++i)
      ASSERT_TRUE(app->dispatch(deposit{std::to_string(a), a * 10 + i}));
    ASSERT_TRUE(app->dispatch(withdraw{std::to_string(a), a}));
  }
  ASSERT_TRUE(caught_up(*app, **status));
  auto* models = sourcery::testing::checked(app->read_models(), "open the read models");
  auto before = models->dump(balance_view::projection_name);
  ASSERT_TRUE(before);
  EXPECT_EQ(before->size(), 60u); // owners, balances, counts for 20 accounts
  ASSERT_FALSE(app->rebuild_projection(balance_view::projection_name));
  ASSERT_TRUE(caught_up(*app, **status));
  auto after = models->dump(balance_view::projection_name);
  ASSERT_TRUE(after);
  EXPECT_EQ(*before, *after);
  // A copy built off-line from the log is identical too.
  auto copy = project_as_of<balance_view>(app->store(), app->event_types(), *models, "copy");
  ASSERT_TRUE(copy) << describe_error(copy.error());
  auto copied = models->dump("copy");
  ASSERT_TRUE(copied);
  EXPECT_EQ(*copied, *before);
  EXPECT_TRUE(app->rebuild_projection("nobody"));
}

TEST_F(projections, time_travel_projects_as_of_a_position_or_a_time) {
  auto app = start_app((dir_ / "data").string());
  ASSERT_TRUE(app->dispatch(open_account{"t", "tim"}));
  ASSERT_TRUE(app->dispatch(deposit{"t", 100}));
  auto middle = app->store().head_position();
  std::this_thread::sleep_for(5ms);
  auto events = app->store().read_all(middle, 1);
  ASSERT_TRUE(events && events->size() == 1);
  auto middle_time = events->front().created_at;
  std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(app->dispatch(deposit{"t", 50}));
  ASSERT_TRUE(app->dispatch(withdraw{"t", 30}));
  auto* models = sourcery::testing::checked(app->read_models(), "open the read models");
  as_of at_position;
  at_position.position = middle;
  auto r = project_as_of<balance_view>(app->store(), app->event_types(), *models, "then", at_position);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, middle);
  EXPECT_EQ(**models->get("then", "balances", "account-t"), "100");
  as_of at_time;
  at_time.created_at = middle_time;
  ASSERT_TRUE(project_as_of<balance_view>(app->store(), app->event_types(), *models, "then", at_time));
  EXPECT_EQ(**models->get("then", "balances", "account-t"), "100");
  ASSERT_TRUE(project_as_of<balance_view>(app->store(), app->event_types(), *models, "now"));
  EXPECT_EQ(**models->get("now", "balances", "account-t"), "120");
}

} // namespace
