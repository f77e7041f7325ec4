// The LMDB store's operator side: verify finds each kind of damage and never
// writes; usage accounts for the databases; an import restores a store
// exactly, ids, positions and times included.

#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "../support/damaged_store.hpp"
#include "../support/raw_lmdb.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "test_events.hpp"

using namespace sourcery::persistence;
using namespace sourcery::testing;
using sourcery::testing::damage;

namespace {

std::set<std::string> kinds_found(const std::string& path) {
  auto store = open_store(path, true);
  if (!store)
    return {"cannot open"};
  auto report = store->verify();
  EXPECT_TRUE(report) << describe(report.error());
  std::set<std::string> kinds;
  if (report)
    for (auto& p : report->problems)
      kinds.insert(p.kind);
  return kinds;
}

std::string file_bytes(const std::string& file) {
  std::ifstream in{file, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, {}};
}

TEST(verify, a_healthy_store_passes_with_counts) {
  temp_dir dir;
  auto path = (dir / "store").string();
  fill(path);
  auto store = open_store(path, true);
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  auto report = store->verify([&](uint64_t done, uint64_t total) { progress.emplace_back(done, total); });
  ASSERT_TRUE(report) << describe(report.error());
  for (auto& p : report->problems)
    ADD_FAILURE() << p.kind << ": " << p.message;
  EXPECT_TRUE(report->ok());
  EXPECT_EQ(report->events, 57u);
  EXPECT_EQ(report->streams, 4u);
  EXPECT_EQ(report->index_entries, 57u);
  EXPECT_EQ(report->snapshots, 1u);
  EXPECT_EQ(report->checkpoints, 2u);
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), (std::pair<uint64_t, uint64_t>{57, 57}));
}

class verify_damage : public ::testing::TestWithParam<damage> {};

TEST_P(verify_damage, is_detected_and_named) {
  temp_dir dir;
  auto path = (dir / "store").string();
  fill(path);
  ASSERT_TRUE(kinds_found(path).empty());
  {
    raw_env env{path};
    GetParam().inflict(env);
  }
  auto before = file_bytes(path + "/data.mdb");
  auto kinds = kinds_found(path);
  for (auto& k : GetParam().expected)
    EXPECT_TRUE(kinds.count(k)) << "missing " << k;
  for (auto& k : kinds)
    EXPECT_TRUE(GetParam().expected.count(k)) << "unexpected " << k;
  EXPECT_EQ(file_bytes(path + "/data.mdb"), before) << "verify never writes";
}

INSTANTIATE_TEST_SUITE_P(kinds, verify_damage, ::testing::ValuesIn(damages()),
                         [](const auto& info) { return std::string{info.param.name}; });

TEST(verify, a_live_store_with_unindexed_tails_passes) {
  temp_dir dir;
  fill((dir / "store").string(), true);
}

TEST(usage, accounts_for_every_database) {
  temp_dir dir;
  auto path = (dir / "store").string();
  fill(path);
  auto store = open_store(path, true);
  auto u = store->usage();
  ASSERT_TRUE(u) << describe(u.error());
  EXPECT_EQ(u->head_position, 57u);
  EXPECT_GT(u->page_size, 0u);
  EXPECT_GE(u->map_size, u->map_used);
  EXPECT_GT(u->file_size, 0u);
  std::map<std::string, uint64_t> entries;
  for (auto& db : u->databases) {
    entries[db.name] = db.entries;
    if (db.entries > 0) {
      EXPECT_GT(db.bytes, 0u) << db.name;
    }
  }
  EXPECT_EQ(entries["events"], 57u);
  EXPECT_EQ(entries["streams"], 4u);
  EXPECT_EQ(entries["stream_index"], 57u);
  EXPECT_EQ(entries["snapshots"], 1u);
  EXPECT_EQ(entries["checkpoints"], 2u);
}

/// Everything a store holds, through the public API.
struct contents {
  std::vector<recorded_event> events;
  std::vector<stream_info> streams;
  std::vector<snapshot> snapshots;
  std::vector<std::pair<std::string, uint64_t>> checkpoints;
};

contents read_everything(const event_store& s) {
  contents c;
  EXPECT_FALSE(s.for_each_in_all(1, [&](const recorded_event& e) { return c.events.push_back(e), true; }));
  EXPECT_FALSE(s.for_each_stream([&](const stream_info& i) { return c.streams.push_back(i), true; }));
  EXPECT_FALSE(s.for_each_snapshot([&](const snapshot& snap) { return c.snapshots.push_back(snap), true; }));
  auto cps = s.checkpoints();
  EXPECT_TRUE(cps);
  if (cps)
    c.checkpoints = *cps;
  return c;
}

TEST(import, restores_a_store_exactly) {
  temp_dir dir;
  auto source_path = (dir / "source").string();
  fill(source_path);
  auto source = open_store(source_path, true);
  auto original = read_everything(*source);
  ASSERT_EQ(original.events.size(), 57u);

  auto target = open_store((dir / "target").string());
  // In two imports, as a tool reading an export in chunks would.
  std::vector<recorded_event> first(original.events.begin(), original.events.begin() + 30);
  std::vector<recorded_event> rest(original.events.begin() + 30, original.events.end());
  ASSERT_TRUE(target->import_events(first));
  ASSERT_TRUE(target->import_events(rest));
  for (auto& s : original.streams)
    if (s.deleted) {
      ASSERT_TRUE(target->import_deleted_stream(s));
    }
  for (auto& snap : original.snapshots)
    ASSERT_TRUE(target->import_snapshot(snap));
  for (auto& [name, pos] : original.checkpoints)
    ASSERT_TRUE(target->save_checkpoint(name, pos));

  auto copy = read_everything(*target);
  EXPECT_EQ(copy.events, original.events) << "ids, positions, versions, times and payloads";
  ASSERT_EQ(copy.streams.size(), original.streams.size());
  for (size_t i = 0; i < copy.streams.size(); ++i) {
    EXPECT_EQ(copy.streams[i].stream_id, original.streams[i].stream_id);
    EXPECT_EQ(copy.streams[i].version, original.streams[i].version);
    EXPECT_EQ(copy.streams[i].deleted, original.streams[i].deleted);
    EXPECT_EQ(copy.streams[i].created_at, original.streams[i].created_at);
    EXPECT_EQ(copy.streams[i].updated_at, original.streams[i].updated_at);
  }
  EXPECT_EQ(copy.snapshots, original.snapshots);
  EXPECT_EQ(copy.checkpoints, original.checkpoints);
  auto report = target->verify();
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->ok());
  // The restored store goes on like the original.
  auto r = target->append("a", expected_version::exact(10), make_events(9, 1));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->last_position, 58u);
}

TEST(import, refuses_events_that_do_not_continue_the_log) {
  temp_dir dir;
  auto source_path = (dir / "source").string();
  fill(source_path);
  auto events = read_everything(*open_store(source_path, true)).events;
  auto target = open_store((dir / "target").string());
  std::vector<recorded_event> skipping(events.begin() + 1, events.begin() + 3);
  auto r = target->import_events(skipping);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::invalid_argument);
  EXPECT_NE(describe(r.error()).find("does not continue the log"), std::string::npos) << describe(r.error());
  EXPECT_EQ(target->head_position(), 0u);
  std::vector<recorded_event> swapped{events[1], events[0]};
  EXPECT_FALSE(target->import_events(swapped));
  auto nil = events[0];
  nil.event_id = {};
  EXPECT_FALSE(target->import_events({nil}));
  auto garbled = events[0];
  garbled.data = {0xc1};
  EXPECT_FALSE(target->import_events({garbled}));
  EXPECT_EQ(target->head_position(), 0u) << "nothing of a refused import is written";
}

} // namespace
