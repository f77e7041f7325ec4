// Kill a writing process with SIGKILL at random moments, many times; after
// each kill every acknowledged append must be in the store, in order, with
// `$all` gapless and no batch half-written.

#include <future>
#include <map>
#include <random>
#include <sstream>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/lmdb_store.hpp"

using namespace sourcery::persistence;
using namespace sourcery::testing;

namespace {

struct ack {
  std::string stream;
  uint64_t first_version = 0;
  uint64_t count = 0;
  uint64_t first_position = 0;
  std::string batch;
};

/// Runs the writer for `run_ms`, kills it, returns the appends it acknowledged.
std::vector<ack> run_and_kill(const std::string& store, int threads, int run_ms, const std::string& tag = {}) {
  int fds[2];
  if (pipe(fds) != 0)
    throw std::runtime_error("pipe failed");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    auto t = std::to_string(threads);
    if (tag.empty())
      execl(SOURCERY_CRASH_WRITER, SOURCERY_CRASH_WRITER, store.c_str(), t.c_str(), static_cast<char*>(nullptr));
    else
      execl(SOURCERY_CRASH_WRITER, SOURCERY_CRASH_WRITER, store.c_str(), t.c_str(), tag.c_str(),
            static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[65536];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds{run_ms};
  bool killed = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (!killed && left.count() <= 0) {
      kill(pid, SIGKILL);
      killed = true;
    }
    pollfd p{fds[0], POLLIN, 0};
    poll(&p, 1, killed ? 1000 : static_cast<int>(std::max<int64_t>(1, left.count())));
    if (p.revents & (POLLIN | POLLHUP)) {
      auto n = read(fds[0], buf, sizeof buf);
      if (n <= 0)
        break; // writer gone and pipe drained
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
    << "the writer ended on its own (status " << status << ") before being killed";
  std::vector<ack> acks;
  std::istringstream lines{out};
  std::string line;
  while (std::getline(lines, line)) {
    if (lines.eof())
      break; // a line without its newline was cut by the kill
    std::istringstream f{line};
    std::string tag;
    ack a;
    f >> tag >> a.stream >> a.first_version >> a.count >> a.first_position >> a.batch;
    if (tag == "ACK" && f)
      acks.push_back(a);
  }
  return acks;
}

/// Every acknowledged append is in `store` at its versions and positions;
/// `$all` is gapless, stream versions follow each other, batches are whole.
void check_store(const event_store& store, const std::vector<ack>& all_acks) {
  // Every acknowledged append is there, at its versions and positions.
  for (const auto& a : all_acks) {
    auto events = store.read_stream(a.stream, a.first_version, a.count);
    ASSERT_TRUE(events) << describe(events.error());
    ASSERT_EQ(events->size(), a.count) << a.stream << " v" << a.first_version;
    for (uint64_t i = 0; i < a.count; ++i) {
      const auto& ev = (*events)[i];
      EXPECT_EQ(ev.position, a.first_position + i);
      auto data = event_registry::data_as_json(ev.data);
      ASSERT_TRUE(data);
      EXPECT_EQ((*data)["batch"], a.batch);
      EXPECT_EQ((*data)["index"], i);
    }
  }
  // $all is gapless, stream versions follow each other, batches are whole.
  std::map<std::string, uint64_t> versions;
  std::map<std::string, std::pair<uint64_t, uint64_t>> batches; // batch -> (seen, count)
  uint64_t expected_pos = 1;
  for (uint64_t from = 1;;) {
    auto page = store.read_all(from, 2000);
    ASSERT_TRUE(page) << describe(page.error());
    if (page->empty())
      break;
    for (const auto& ev : *page) {
      ASSERT_EQ(ev.position, expected_pos++);
      auto& v = versions[ev.stream_id];
      ASSERT_EQ(ev.stream_version, v + 1) << ev.stream_id;
      v = ev.stream_version;
      auto data = event_registry::data_as_json(ev.data);
      ASSERT_TRUE(data);
      auto& b = batches[(*data)["batch"].get<std::string>()];
      EXPECT_EQ((*data)["index"].get<uint64_t>(), b.first);
      b.first++;
      b.second = (*data)["count"].get<uint64_t>();
    }
    from = page->back().position + 1;
  }
  EXPECT_EQ(expected_pos - 1, store.head_position());
  for (const auto& [id, b] : batches)
    EXPECT_EQ(b.first, b.second) << "batch " << id << " is partial";
}

TEST(crash, acknowledged_appends_survive_sigkill) {
  temp_dir dir;
  auto path = (dir / "store").string();
  auto seed = static_cast<uint32_t>(::testing::UnitTest::GetInstance()->random_seed());
  std::mt19937 rng{seed};
  std::vector<ack> all_acks;
  const int kills = 12;
  for (int round = 0; round < kills; ++round) {
    SCOPED_TRACE("round " + std::to_string(round) + ", seed " + std::to_string(seed));
    auto acks = run_and_kill(path, 8, 60 + static_cast<int>(rng() % 250));
    all_acks.insert(all_acks.end(), acks.begin(), acks.end());
    auto opened = lmdb_store::open({.path = path});
    ASSERT_TRUE(opened) << describe(opened.error());
    ASSERT_NO_FATAL_FAILURE(check_store(**opened, all_acks));
  }
  EXPECT_GT(all_acks.size(), 100u) << "the writer acknowledged too little to prove anything";
  std::printf("crash test: %d kills, %zu acknowledged appends verified (seed %u)\n", kills, all_acks.size(), seed);
}

// Two writer processes share one PostgreSQL store; each is SIGKILLed at its
// own random moment, many times: every acknowledged append is there once.
TEST(crash, acknowledged_appends_survive_sigkill_on_postgres) {
  temp_dir dir;
  auto opts = test_pg_options(dir);
  auto uri = init_test_store(opts.conninfo + "&schema=" + opts.schema);
  auto seed = static_cast<uint32_t>(::testing::UnitTest::GetInstance()->random_seed());
  std::mt19937 rng{seed};
  std::vector<ack> all_acks;
  const int kills = 8;
  for (int round = 0; round < kills; ++round) {
    SCOPED_TRACE("round " + std::to_string(round) + ", seed " + std::to_string(seed));
    int a_ms = 300 + static_cast<int>(rng() % 400), b_ms = 300 + static_cast<int>(rng() % 400);
    auto a = std::async(std::launch::async, [&] { return run_and_kill(uri, 4, a_ms, "a"); });
    auto b = std::async(std::launch::async, [&] { return run_and_kill(uri, 4, b_ms, "b"); });
    for (auto* f : {&a, &b}) {
      auto acks = f->get();
      all_acks.insert(all_acks.end(), acks.begin(), acks.end());
    }
    auto store = open_test_pg(opts);
    ASSERT_NO_FATAL_FAILURE(check_store(*store, all_acks));
  }
  EXPECT_GT(all_acks.size(), 100u) << "the writers acknowledged too little to prove anything";
  std::printf("crash test (PostgreSQL): %d rounds of two killed writers, %zu acknowledged appends verified (seed %u)\n",
              kills, all_acks.size(), seed);
}

} // namespace
