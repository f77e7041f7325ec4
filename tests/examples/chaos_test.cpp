// The chaos run of issue 22 in the suite: 60 s of random faults, one at a
// time, on three bank-node processes under load (tests/support/bank_chaos.hpp),
// on a PostgreSQL server of the test's own (it is frozen and crashed). Longer
// runs: `sourcery-bench chaos --store URI --seconds N`.

#include <gtest/gtest.h>

#include "../support/bank_chaos.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"

namespace {

TEST(chaos, sixty_seconds_of_random_faults_lose_nothing_and_every_fault_heals_within_5_s) {
  sourcery::testing::temp_dir dir;
  sourcery::testing::private_server server{SOURCERY_PG_SCRIPT};
  sourcery::testing::chaos_settings s;
  s.server = server.uri();
  s.schema = sourcery::testing::test_schema(dir);
  s.bank_node = BANK_NODE_PATH;
  s.work_dir = dir.str();
  s.duration = std::chrono::seconds{60};
  s.seed = std::random_device{}();
  s.say = [](const std::string& line) { std::printf("%s\n", line.c_str()); };
  std::printf("seed %u\n", s.seed);
  auto r = sourcery::testing::bank_chaos{s}.run();

  for (auto& p : r.problems)
    ADD_FAILURE() << p;
  EXPECT_TRUE(r.left_out.empty()) << "every kind of fault runs here (root, a unix-socket server)";
  EXPECT_GE(r.faults.size(), 4u) << "the run caused faults";
  EXPECT_GT(r.acknowledged, 100u) << "the load ran";
  EXPECT_EQ(r.lost, 0) << "acknowledged deposits missing";
  EXPECT_EQ(r.duplicated, 0) << "deposits stored twice";
  EXPECT_EQ(r.version_gaps, 0) << "stream versions are contiguous";
  EXPECT_EQ(r.money_held, r.money_deposited) << "money is conserved across transfers";
  EXPECT_TRUE(r.projection_agrees) << "the projection caught up with every account";
  EXPECT_EQ(r.checkpoint_backwards, 0) << "the projection's checkpoint moved back";
  EXPECT_GT(r.checkpoint_seen, 0) << "the checkpoint was never seen: nothing was checked";
  EXPECT_EQ(r.node_exits, 0);
  EXPECT_EQ(r.deadlocks, 0) << "deadlock detected in the server's log";
  for (auto& f : r.faults) {
    EXPECT_GE(f.recovery_seconds, 0) << f.what << ": not every node served every account again";
    EXPECT_LE(f.recovery_seconds, 5.0) << f.what;
  }
  std::printf("unfaulted accounts: %d of %d commands OK (%.2f %%); %zu deposits acknowledged\n", r.unfaulted_ok,
              r.unfaulted_total, 100.0 * r.unfaulted_ok_share(), r.acknowledged);
  EXPECT_GE(r.unfaulted_ok_share(), 0.99) << "commands for accounts whose owner was not faulted";
}

} // namespace
