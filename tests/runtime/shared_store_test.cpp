// Two applications on one PostgreSQL store, as two processes of one
// deployment would be (before the cluster shares the work): commands on
// either are consistent, and a projection both run applies each event once.

#include <gtest/gtest.h>

#include "../../examples/bank/balances.hpp"
#include "../../examples/bank/routes.hpp"
#include "../support/postgres.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<application> start_on(const std::string& uri) {
  application_config cfg;
  cfg.store_uri = uri;
  auto app = application::start(cfg, bank::routes());
  if (!app)
    throw std::runtime_error(describe_error(app.error()));
  return std::move(*app);
}

TEST(shared_store, two_applications_project_each_event_once_and_both_keep_up) {
  sourcery::testing::temp_dir dir;
  auto uri = sourcery::testing::test_pg_store(dir);
  auto a = start_on(uri);
  auto b = start_on(uri);
  dispatch_options strong;
  strong.consistency_level = consistency::strong;
  strong.consistent_with = {balances::projection_name};
  std::vector<std::shared_ptr<handler_status>> status;
  for (auto* app : {a.get(), b.get()}) {
    auto s = app->add_projection<balances>({}, true);
    ASSERT_TRUE(s) << describe_error(s.error());
    status.push_back(*s);
  }
  ASSERT_TRUE(a->dispatch(open_account{"1", "ann"}));
  ASSERT_TRUE(b->dispatch(open_account{"2", "bob"}));
  int64_t expected1 = 0, expected2 = 0;
  for (int i = 1; i <= 40; ++i) {
    auto& app = i % 2 ? *a : *b;
    auto r = app.dispatch(deposit{i % 3 ? "1" : "2", i}, strong);
    ASSERT_TRUE(r) << describe_error(r.error());
    ASSERT_TRUE(r->accepted);
    (i % 3 ? expected1 : expected2) += i;
  }
  // Both applications' projections reach the head (a strong dispatch on
  // either waits for its own), and the shared read model counts each
  // deposit once.
  auto head = a->store().head_position();
  for (auto& s : status) {
    for (int i = 0; i < 500 && s->position() < head; ++i)
      std::this_thread::sleep_for(10ms);
    EXPECT_GE(s->position(), head) << s->name();
  }
  auto models = a->read_models();
  ASSERT_TRUE(models);
  EXPECT_EQ(*(*models)->get(balances::projection_name, "balances", "account-1"),
            std::optional<std::string>{std::to_string(expected1)});
  EXPECT_EQ(*(*models)->get(balances::projection_name, "balances", "account-2"),
            std::optional<std::string>{std::to_string(expected2)});
}

} // namespace
