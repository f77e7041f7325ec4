// A full filesystem and a second writing process: clear errors, never a
// crash (SIGBUS at open) and never two writers on one store.

#include <csignal>
#include <cstdlib>

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/child_process.hpp"
#include "../support/read_model_holder.hpp"
#include "../support/small_filesystem.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/projection_store.hpp"
#include "test_events.hpp"

using namespace sourcery::persistence;
using sourcery::testing::small_filesystem;
using sourcery::testing::temp_dir;

TEST(full_disk, opening_a_store_on_a_full_filesystem_is_store_full_not_a_crash) {
  small_filesystem fs;
  ASSERT_EQ(fs.error(), "");
  std::filesystem::create_directories(fs / "events");
  std::filesystem::create_directories(fs / "models");
  fs.fill();
  auto store = lmdb_store::open({.path = (fs / "events").string()});
  ASSERT_FALSE(store);
  EXPECT_EQ(code_of(store.error()), store_errc::store_full) << describe(store.error());
  projection_store_options po;
  po.path = (fs / "models").string();
  auto models = projection_store::open(po);
  ASSERT_FALSE(models);
  EXPECT_EQ(code_of(models.error()), store_errc::store_full) << describe(models.error());
  // Space again: both open, as if nothing had happened.
  fs.free_filler();
  auto again = lmdb_store::open({.path = (fs / "events").string()});
  ASSERT_TRUE(again) << describe(again.error());
  EXPECT_TRUE((*again)->append("s-1", expected_version::any(), {sourcery::testing::make_event(1)}));
  ASSERT_TRUE(projection_store::open(po));
}

TEST(full_disk, a_file_size_limit_is_store_full_not_sigxfsz) {
  // In a child: the limit and the signal's disposition are per process.
  temp_dir dir;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto store = lmdb_store::open({.path = dir.str()});
    if (!store)
      ::_exit(3);
    struct rlimit lim{1 << 20, 1 << 20}; // 1 MiB
    ::setrlimit(RLIMIT_FSIZE, &lim);
    std::string big(64 << 10, 'x');
    for (int i = 0; i < 100; ++i) {
      event_data ev;
      ev.type = "test.big";
      ev.data = sourcery::testing::map_payload(i, big);
      auto r = (*store)->append("s-" + std::to_string(i), expected_version::any(), {ev});
      // EFBIG is store_full; a write cut short at the limit is LMDB's EIO.
      if (!r)
        ::_exit(code_of(r.error()) == store_errc::store_full ? 0 : code_of(r.error()) == store_errc::io_error ? 6 : 4);
    }
    ::_exit(5); // the limit was never reached
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_TRUE(WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 6) << "exit " << WEXITSTATUS(status);
}

TEST(one_writer, a_second_writing_process_is_refused_and_readers_are_not) {
  temp_dir dir;
  { ASSERT_TRUE(lmdb_store::open({.path = dir.str()})); } // created, then closed
  sourcery::testing::child_process writer{SOURCERY_CRASH_WRITER, {dir.str(), "1"}};
  auto ack = writer.read_line();
  ASSERT_EQ(ack.rfind("ACK", 0), 0u) << ack;
  auto second = lmdb_store::open({.path = dir.str()});
  ASSERT_FALSE(second);
  EXPECT_EQ(code_of(second.error()), store_errc::store_in_use) << describe(second.error());
  EXPECT_NE(describe(second.error()).find("another process"), std::string::npos);
  auto reader = lmdb_store::open({.path = dir.str(), .read_only = true});
  ASSERT_TRUE(reader) << describe(reader.error());
  EXPECT_GT((*reader)->head_position(), 0u);
  reader->reset();
  writer.signal(SIGKILL);
  writer.wait();
  // The lock died with its process: no stale lock file to clean up.
  auto now = lmdb_store::open({.path = dir.str()});
  ASSERT_TRUE(now) << describe(now.error());
}

TEST(one_writer, read_models_have_one_writing_process_too) {
  temp_dir dir;
  sourcery::testing::read_model_holder other{dir.str()};
  ASSERT_TRUE(other.holding());
  projection_store_options po;
  po.path = dir.str();
  auto second = projection_store::open(po);
  ASSERT_FALSE(second);
  EXPECT_EQ(code_of(second.error()), store_errc::store_in_use) << describe(second.error());
  po.read_only = true;
  EXPECT_TRUE(projection_store::open(po));
  other.release();
  po.read_only = false;
  EXPECT_TRUE(projection_store::open(po));
}
