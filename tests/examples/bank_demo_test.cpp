// The main demo as a user runs it: twice on one data directory.

#include <gtest/gtest.h>

#include "../support/child_process.hpp"
#include "../support/temp_dir.hpp"

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
                         "every balance agrees with its aggregate", "alice's audit trail"})
    EXPECT_NE(first.find(expected), std::string::npos) << expected << "\n" << first;
  auto second = run_demo(dir.str(), status);
  EXPECT_EQ(status, 0) << second;
  EXPECT_NE(second.find("continuing an earlier run"), std::string::npos) << second;
  EXPECT_NE(second.find("rejected: already_open"), std::string::npos) << second;
  EXPECT_NE(second.find("transfers completed        2"), std::string::npos) << second;
  EXPECT_NE(second.find("every balance agrees with its aggregate"), std::string::npos) << second;
}
