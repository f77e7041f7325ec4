// The main demo as a user runs it: twice on one data directory.

#include <gtest/gtest.h>

#include "../support/checked.hpp"
#include "../support/child_process.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/projection_store.hpp"

namespace {

/// Runs bank-demo on `dir` to its end; returns its whole output.
std::string run_demo(const std::string& dir, int& status) {
  sourcery::testing::child_process demo{BANK_DEMO_PATH, {"--data-dir", dir}};
  auto out = demo.read_all();
  status = demo.wait();
  return out;
}

} // namespace

TEST(bank_demo, runs_twice_on_one_directory_and_continues) {
  sourcery::testing::temp_dir dir;
  int status = -1;
  auto first = run_demo(dir.str(), status);
  EXPECT_EQ(status, 0) << first;
  for (auto* expected : {"rejected: insufficient_funds", "the saga settled it: completed",
                         "the saga settled it: failed", "bank.transfer_failed", "restarted (1 restarts so far)",
                         "every balance agrees with its aggregate", "alice's audit trail",
                         "alice's actor reopened on demand from her snapshot (version 4)"})
    EXPECT_NE(first.find(expected), std::string::npos) << expected << "\n" << first;
  auto second = run_demo(dir.str(), status);
  EXPECT_EQ(status, 0) << second;
  EXPECT_NE(second.find("continuing an earlier run"), std::string::npos) << second;
  EXPECT_NE(second.find("rejected: already_open"), std::string::npos) << second;
  EXPECT_NE(second.find("transfers completed        2"), std::string::npos) << second;
  EXPECT_NE(second.find("every balance agrees with its aggregate"), std::string::npos) << second;
}

TEST(bank_demo, admin_rebuilds_the_balance_read_model_byte_for_byte) {
  sourcery::testing::temp_dir dir;
  int status = -1;
  run_demo(dir.str(), status);
  ASSERT_EQ(status, 0);
  auto dump = [&] {
    sourcery::persistence::projection_store_options po;
    po.path = dir.str() + "/read-models";
    po.read_only = true;
    auto models = sourcery::testing::checked(sourcery::persistence::projection_store::open(po), "open the read models");
    auto rows = sourcery::testing::checked(models->dump("bank.balances"), "dump the balances");
    auto cp = sourcery::testing::checked(models->checkpoint("bank.balances"), "read the checkpoint");
    EXPECT_TRUE(cp);
    return std::make_pair(rows, cp.value_or(0));
  };
  auto live = dump();
  ASSERT_FALSE(live.first.empty());
  sourcery::testing::child_process admin{BANK_DEMO_PATH, {"admin", "rebuild", "bank.balances", "--data-dir", dir.str()}};
  auto out = admin.read_all();
  ASSERT_EQ(admin.wait(), 0) << out;
  EXPECT_NE(out.find("rebuilt bank.balances up to position"), std::string::npos) << out;
  auto rebuilt = dump();
  EXPECT_EQ(rebuilt.first, live.first) << "every row, byte for byte";
  EXPECT_EQ(rebuilt.second, live.second);

  // The generic commands work through the application's tool too.
  sourcery::testing::child_process verify{BANK_DEMO_PATH, {"admin", "verify", "--data-dir", dir.str()}};
  EXPECT_NE(verify.read_all().find("ok: the store is intact"), std::string::npos);
  EXPECT_EQ(verify.wait(), 0);
}

TEST(bank_demo, runs_twice_on_postgres_and_continues) {
  sourcery::testing::temp_dir dir;
  auto uri = sourcery::testing::test_pg_store(dir);
  for (int run = 0; run < 2; ++run) {
    sourcery::testing::child_process demo{BANK_DEMO_PATH, {"--store", uri}};
    auto out = demo.read_all();
    EXPECT_EQ(demo.wait(), 0) << out;
    EXPECT_NE(out.find("store: PostgreSQL at postgresql://"), std::string::npos) << out;
    EXPECT_NE(out.find("every balance agrees with its aggregate"), std::string::npos) << out;
    if (run == 1) {
      EXPECT_NE(out.find("continuing an earlier run"), std::string::npos) << out;
    }
  }
  sourcery::testing::child_process bad{BANK_DEMO_PATH, {"--store", "postgresql:///x?host=/nonexistent&port=1"}};
  bad.read_all();
  EXPECT_EQ(bad.wait(), 1) << "an unreachable server is exit status 1, not a hang";
}
