// Personal data through the application: the bank's account owner is a
// personal field. Forgetting a subject erases it from the aggregate (live
// and rebuilt), from the projections that are told, and from the store's
// files, while the account keeps working; the tool forgets too.

#include <filesystem>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

#include "../../examples/bank/routes.hpp"
#include "../support/checked.hpp"
#include "../support/child_process.hpp"
#include "../support/eventually.hpp"
#include "../support/file_search.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/personal.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using persistence::projection_store;
using sourcery::testing::checked;
using sourcery::testing::eventually;
using sourcery::testing::files_hold;

namespace personal_app_tests {

constexpr const char* secret = "Zoe Plaintext-Quinn-4417";

/// Copies owners' names, and erases them when told.
struct owners_view {
  static constexpr const char* projection_name = "test.owners";
  using event = std::variant<account_opened, subject_forgotten>;
  caf::error project(const account_opened& e, const event_context& ctx, projection_store::writer& w) {
    if (e.owner.known())
      w.put("owners", ctx.stream_id, e.owner.value());
    return {};
  }
  caf::error project(const subject_forgotten& e, const event_context&, projection_store::writer& w) {
    w.erase("owners", e.subject);
    return {};
  }
};


std::unique_ptr<application> start_app(const std::string& dir) {
  application_config cfg;
  cfg.data_dir = dir;
  aggregate_settings accounts;
  accounts.snapshot_every = 2; // the owner is in the account's snapshots too
  auto app = application::start(cfg, bank::routes(accounts));
  EXPECT_TRUE(app) << describe_error(app.error());
  return app ? std::move(*app) : nullptr;
}

std::optional<std::string> owner_row(application& app) {
  auto* models = checked(app.read_models(), "open the read models");
  auto r = models->get(owners_view::projection_name, "owners", "account-zq");
  return r ? *r : std::nullopt;
}

TEST(personal_data_app, forgetting_erases_the_owner_everywhere_and_the_account_works_on) {
  sourcery::testing::temp_dir dir;
  auto data = (dir / "data").string();
  {
    auto app = start_app(data);
    ASSERT_TRUE(app);
    auto owners = app->add_projection<owners_view>({}, /*strong*/ true);
    ASSERT_TRUE(owners);
    dispatch_options strong;
    strong.consistency_level = consistency::strong;
    ASSERT_TRUE(checked(app->dispatch(open_account{"zq", secret}, strong)).accepted);
    ASSERT_TRUE(checked(app->dispatch(open_account{"other", "Somebody Else"})).accepted);
    for (int i = 1; i <= 5; ++i) // the live actor keeps its state, and snapshots it
      ASSERT_TRUE(checked(app->dispatch(deposit{"zq", i}, strong)).accepted);
    EXPECT_EQ(checked(app->aggregate_state<account>("account-zq")).owner.value(), secret);
    EXPECT_EQ(owner_row(*app), std::optional<std::string>{secret});

    auto forgot = app->forget("account-zq");
    ASSERT_TRUE(forgot) << describe_error(forgot.error());
    EXPECT_TRUE(*forgot);
    EXPECT_TRUE(checked(app->aggregate_state<account>("account-zq")).owner.forgotten());
    EXPECT_EQ(checked(app->aggregate_state<account>("account-other")).owner.value(), "Somebody Else");
    EXPECT_TRUE(eventually([&] { return !owner_row(*app).has_value(); })) << "the projection was told";

    // The live actor reloads: its next snapshots hold no plaintext.
    for (int i = 1; i <= 4; ++i)
      ASSERT_TRUE(checked(app->dispatch(deposit{"zq", 10}, strong)).accepted);
    auto zq = checked(app->aggregate_state<account>("account-zq"));
    EXPECT_EQ(zq.balance, 15 + 40);
    EXPECT_TRUE(zq.owner.forgotten());

    // A rebuild replays the forget too.
    ASSERT_FALSE(app->rebuild_projection(owners_view::projection_name));
    EXPECT_FALSE(owner_row(*app).has_value());
    auto again = app->forget("account-zq");
    ASSERT_TRUE(again);
    EXPECT_FALSE(*again) << "idempotent";
    EXPECT_FALSE(app->forget("")) << "a subject is 1 to 400 bytes";
    app->stop();
  }
  EXPECT_FALSE(files_hold(dir.path(), secret)) << "neither the store nor the read models keep it";
  auto app = start_app(data);
  ASSERT_TRUE(app);
  EXPECT_TRUE(checked(app->aggregate_state<account>("account-zq")).owner.forgotten());
  EXPECT_EQ(checked(app->aggregate_state<account>("account-other")).owner.value(), "Somebody Else");
}

TEST(personal_data_app, the_tool_forgets_a_subject) {
  sourcery::testing::temp_dir dir;
  auto data = (dir / "data").string();
  {
    auto app = start_app(data);
    ASSERT_TRUE(app);
    ASSERT_TRUE(checked(app->dispatch(open_account{"zq", secret})).accepted);
    app->stop();
  }
  auto run = [&](std::vector<std::string> args) {
    sourcery::testing::child_process p{SOURCERY_CLI_PATH, std::move(args), dir.str() + ".err"};
    auto out = p.read_all();
    return std::make_pair(p.wait(), out);
  };
  // The tool shows that a field is personal, never what it holds.
  auto [read_status, shown] = run({"read", "--data-dir", data, "account-zq", "--json"});
  EXPECT_EQ(read_status, 0) << shown;
  EXPECT_NE(shown.find("\"owner\":{\"$personal\":\"sealed\"}"), std::string::npos) << shown;
  EXPECT_EQ(shown.find(secret), std::string::npos) << shown;
  auto [status, out] = run({"forget", "--data-dir", data, "account-zq"});
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("forgot account-zq"), std::string::npos) << out;
  auto [status2, out2] = run({"forget", "--data-dir", data, "account-zq"});
  EXPECT_EQ(status2, 0);
  EXPECT_NE(out2.find("has no key"), std::string::npos) << out2;
  auto app = start_app(data);
  ASSERT_TRUE(app);
  EXPECT_TRUE(checked(app->aggregate_state<account>("account-zq")).owner.forgotten());
  auto told = app->store().read_stream(forgotten_subjects_stream, 1, 10);
  ASSERT_TRUE(told);
  EXPECT_EQ(told->size(), 2u) << "each forget is announced";
}

} // namespace personal_app_tests
