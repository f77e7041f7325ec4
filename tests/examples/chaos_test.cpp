// The chaos run of issue 22 in the suite: 60 s of random faults, one at a
// time, on three bank-node processes under load (tests/support/bank_chaos.hpp),
// on a PostgreSQL server of the test's own (it is frozen and crashed). Longer
// runs: `sourcery-bench chaos --store URI --seconds N`.

#include <gtest/gtest.h>

#include "../support/bank_chaos.hpp"
#include "../support/late_commits.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"

namespace {

// The late-commit check itself finds a batch committed after its writer's
// shard changed hands (written here by hand, as a writer that ignored its
// fence would), and passes the one committed before.
TEST(late_commit_check, finds_a_batch_committed_after_its_writer_lost_the_shard) {
  sourcery::testing::temp_dir dir;
  auto server = sourcery::testing::test_pg_uri();
  auto schema = sourcery::testing::test_schema(dir);
  auto opts = sourcery::testing::test_pg_options(dir);
  ASSERT_TRUE(sourcery::testing::open_test_pg(opts)); // the event store's tables
  sourcery::testing::install_lease_log(server, schema);
  auto shard = std::to_string(sourcery::cluster::shard_of("account-x", 64));
  auto event = [&](int position) {
    return "INSERT INTO " + schema + ".events VALUES (" + std::to_string(position) + ", gen_random_uuid(), 'account-x', "
           + std::to_string(position) + ", 't', 1, '', '', '', '', 0); INSERT INTO " + schema
           + ".cluster_writes VALUES (" + std::to_string(position) + ", 1, 'bank', 'a:1#1')";
  };
  using sourcery::testing::run_sql;
  run_sql(server, "INSERT INTO " + schema + ".cluster_leases VALUES ('bank', 'shard:" + shard
                    + "', 'a:1#1', 1, now() + interval '1 minute')");
  run_sql(server, event(1)); // a holds the shard: in time
  auto ok = sourcery::testing::late_commits(server, schema);
  EXPECT_EQ(ok.batches, 1u);
  EXPECT_TRUE(ok.late.empty());
  run_sql(server, "UPDATE " + schema + ".cluster_leases SET owner = 'b:2#2', epoch = 2 WHERE name = 'shard:" + shard + "'");
  run_sql(server, event(2)); // a writes on after b took the shard: late
  auto r = sourcery::testing::late_commits(server, schema);
  EXPECT_EQ(r.batches, 2u);
  EXPECT_EQ(r.handed_over, 1u); // the first: b took its shard after it
  ASSERT_EQ(r.late.size(), 1u);
  EXPECT_NE(r.late[0].find("position 2 by a:1#1"), std::string::npos) << r.late[0];
  EXPECT_NE(r.late[0].find("while b:2#2 owned"), std::string::npos) << r.late[0];
}

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
  EXPECT_GT(r.batches_checked, 0) << "no fenced batch was checked for a late commit";
  EXPECT_GT(r.batches_handed_over, 0) << "no batch was written on a shard that changed hands: nothing could be late";
  for (auto& l : r.late_commits)
    ADD_FAILURE() << "late commit: " << l;
  std::printf("late commits: %zu of %d fenced batches (%d on shards that changed hands later)\n", r.late_commits.size(),
              r.batches_checked, r.batches_handed_over);
  for (auto& f : r.faults) {
    EXPECT_GE(f.recovery_seconds, 0) << f.what << ": not every node served every account again";
    EXPECT_LE(f.recovery_seconds, 5.0) << f.what;
  }
  std::printf("unfaulted accounts: %d of %d commands OK (%.2f %%); %zu deposits acknowledged\n", r.unfaulted_ok,
              r.unfaulted_total, 100.0 * r.unfaulted_ok_share(), r.acknowledged);
  EXPECT_GE(r.unfaulted_ok_share(), 0.99) << "commands for accounts whose owner was not faulted";
}

} // namespace
