// What only the LMDB store has: durability across reopen, group commit, map
// growth, the lazy stream index, and refusing bad directories and records.

#include <fstream>
#include <future>
#include <random>
#include <set>
#include <thread>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>
#include <lmdb.h>
#include <nlohmann/json.hpp>

#include "../support/checked.hpp"
#include "../support/raw_lmdb.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/memory_store.hpp"
#include "sourcery/persistence/projection_store.hpp"
#include "test_events.hpp"

using namespace sourcery::persistence;
using namespace sourcery::testing;
using sourcery::testing::raw_env;
using sourcery::testing::position_key;

namespace {

std::unique_ptr<lmdb_store> open_store(const std::string& path, lmdb_options opts = {}) {
  opts.path = path;
  return sourcery::testing::checked(lmdb_store::open(opts), "open " + path);
}

std::string read_error(event_store& s) {
  auto r = s.read_all(1, 1000);
  return r ? "" : std::string{to_string(code_of(r.error()))};
}

TEST(lmdb_store, matches_the_memory_store_across_reopens) {
  temp_dir dir;
  auto path = (dir / "store").string();
  auto lmdb = open_store(path);
  memory_store oracle;
  std::mt19937 rng{static_cast<uint32_t>(::testing::UnitTest::GetInstance()->random_seed())};
  std::vector<std::string> streams;
  for (int i = 0; i < 12; ++i)
    streams.push_back("stream-" + std::to_string(i));
  int64_t n = 0;
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 400; ++i) {
      auto& stream = streams[rng() % streams.size()];
      auto events = make_events(n, 1 + rng() % 4);
      for (auto& ev : events)
        ev.event_id = uuid::random(); // the same ids in both stores
      n += static_cast<int64_t>(events.size());
      auto a = lmdb->append(stream, expected_version::any(), events);
      auto b = oracle.append(stream, expected_version::any(), events);
      ASSERT_TRUE(a && b);
      ASSERT_EQ(a->stream_version, b->stream_version);
      ASSERT_EQ(a->last_position, b->last_position);
    }
    // Reopen: the writer's memory of unindexed events is gone; reads follow links.
    if (round % 2 == 0) {
      lmdb.reset();
      lmdb = open_store(path);
    }
    for (auto& stream : streams) {
      auto version = oracle.stream_info(stream)->version;
      for (int probe = 0; probe < 20; ++probe) {
        uint64_t from = rng() % (version + 2);
        size_t count = 1 + rng() % 40;
        auto dir = probe % 2 == 0 ? read_direction::forward : read_direction::backward;
        auto x = lmdb->read_stream(stream, from, count, dir);
        auto y = oracle.read_stream(stream, from, count, dir);
        ASSERT_TRUE(x) << describe(x.error());
        ASSERT_EQ(x->size(), y->size()) << stream << " from " << from << " count " << count;
        for (size_t i = 0; i < x->size(); ++i) {
          EXPECT_EQ((*x)[i].position, (*y)[i].position);
          EXPECT_EQ((*x)[i].stream_version, (*y)[i].stream_version);
          EXPECT_EQ((*x)[i].data, (*y)[i].data);
          EXPECT_EQ((*x)[i].event_id, (*y)[i].event_id);
        }
      }
    }
  }
}

TEST(lmdb_store, group_commit_fails_a_wrong_version_alone) {
  temp_dir dir;
  auto store = open_store((dir / "store").string());
  constexpr int n = 200;
  std::vector<std::promise<caf::expected<append_result>>> contended(n), independent(n);
  for (int i = 0; i < n; ++i) {
    store->append_async("contended", expected_version::no_stream(), {make_event(i)},
                        [&, i](caf::expected<append_result> r) { contended[i].set_value(std::move(r)); });
    store->append_async("own-" + std::to_string(i), expected_version::no_stream(), {make_event(i)},
                        [&, i](caf::expected<append_result> r) { independent[i].set_value(std::move(r)); });
  }
  int wins = 0;
  for (int i = 0; i < n; ++i) {
    auto c = contended[i].get_future().get();
    if (c)
      ++wins;
    else
      EXPECT_EQ(code_of(c.error()), store_errc::wrong_expected_version);
    auto r = independent[i].get_future().get();
    EXPECT_TRUE(r) << describe(r.error());
  }
  EXPECT_EQ(wins, 1);
  auto stats = store->stats();
  EXPECT_EQ(stats.operations, 2u * n);
  EXPECT_LT(stats.commits, stats.operations / 4) << "appends were not grouped into shared commits";
  EXPECT_EQ(store->head_position(), static_cast<uint64_t>(n + 1));
}

TEST(lmdb_store, map_grows_when_full) {
  temp_dir dir;
  auto path = (dir / "store").string();
  lmdb_options opts;
  opts.initial_map_size = size_t{1} << 20;
  auto store = open_store(path, opts);
  event_data big = make_event(0);
  big.data = map_payload(0, std::string(32 * 1024, 'x'));
  for (int i = 0; i < 200; ++i) // ~6.5 MB
    ASSERT_TRUE(store->append("big", expected_version::exact(static_cast<uint64_t>(i)), {big}));
  EXPECT_GT(store->stats().map_resizes, 0u);
  EXPECT_GE(store->stats().map_size, size_t{4} << 20);
  store.reset();
  store = open_store(path, opts);
  auto info = store->stream_info("big");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->version, 200u);
}

TEST(lmdb_store, a_group_that_fills_the_map_is_applied_again_whole_after_growing) {
  // Many appends queued at once form groups; the map fills partway through a
  // group. Every append must land exactly once, in its stream's order.
  temp_dir dir;
  auto path = (dir / "store").string();
  lmdb_options opts;
  opts.initial_map_size = size_t{1} << 20;
  auto store = open_store(path, opts);
  event_data big = make_event(0);
  big.data = map_payload(0, std::string(8 * 1024, 'x'));
  constexpr int streams = 16, per_stream = 40; // ~5 MB in all
  std::vector<std::promise<caf::expected<append_result>>> done(streams * per_stream);
  for (int v = 0; v < per_stream; ++v)
    for (int s = 0; s < streams; ++s)
      store->append_async("s-" + std::to_string(s), expected_version::exact(static_cast<uint64_t>(v)), {big},
                          [&done, i = v * streams + s](caf::expected<append_result> r) {
                            done[static_cast<size_t>(i)].set_value(std::move(r));
                          });
  for (int i = 0; i < streams * per_stream; ++i) {
    auto r = done[static_cast<size_t>(i)].get_future().get();
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_EQ(r->stream_version, static_cast<uint64_t>(i / streams + 1));
  }
  EXPECT_GT(store->stats().map_resizes, 0u);
  EXPECT_LT(store->stats().commits, store->stats().operations) << "appends were not grouped";
  store.reset();
  store = open_store(path, opts);
  EXPECT_EQ(store->head_position(), static_cast<uint64_t>(streams * per_stream));
  for (int s = 0; s < streams; ++s) {
    auto events = store->read_stream("s-" + std::to_string(s), 1, 1000);
    ASSERT_TRUE(events);
    ASSERT_EQ(events->size(), static_cast<size_t>(per_stream));
    for (size_t v = 0; v < events->size(); ++v)
      EXPECT_EQ((*events)[v].stream_version, v + 1);
  }
  auto all = store->read_all(1, 10'000);
  ASSERT_TRUE(all);
  for (size_t i = 0; i < all->size(); ++i)
    EXPECT_EQ((*all)[i].position, i + 1) << "$all has a gap";
}
TEST(lmdb_store, full_map_is_a_typed_error_and_keeps_earlier_data) {
  temp_dir dir;
  auto path = (dir / "store").string();
  lmdb_options opts;
  opts.initial_map_size = size_t{1} << 20;
  opts.max_map_size = size_t{2} << 20;
  auto store = open_store(path, opts);
  event_data big = make_event(0);
  big.data = map_payload(0, std::string(64 * 1024, 'x'));
  uint64_t accepted = 0;
  caf::error last;
  for (int i = 0; i < 100; ++i) {
    auto r = store->append("big", expected_version::any(), {big});
    if (!r) {
      last = r.error();
      break;
    }
    accepted = r->stream_version;
  }
  ASSERT_TRUE(last) << "the map never filled";
  EXPECT_EQ(code_of(last), store_errc::store_full) << describe(last);
  EXPECT_GT(accepted, 0u);
  // Nothing half-written; reads and small writes still work.
  auto events = store->read_stream("big", 1, 1000);
  ASSERT_TRUE(events);
  EXPECT_EQ(events->size(), accepted);
  EXPECT_EQ(store->head_position(), accepted);
  store.reset();
  store = open_store(path, opts);
  EXPECT_EQ(store->stream_info("big")->version, accepted);
}

TEST(lmdb_store, full_disk_is_a_typed_error_and_keeps_acknowledged_data) {
  temp_dir dir;
  auto path = (dir / "store").string();
  // A child process whose files may not grow past 2 MB: the disk is "full".
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{2u << 20, 2u << 20};
    setrlimit(RLIMIT_FSIZE, &limit);
    auto store = lmdb_store::open({.path = path});
    if (!store)
      _exit(10);
    event_data big = make_event(0);
    big.data = map_payload(0, std::string(16 * 1024, 'x'));
    uint64_t acked = 0;
    for (int i = 0; i < 1000; ++i) {
      auto r = (*store)->append("s", expected_version::any(), {big});
      if (!r) {
        auto code = static_cast<uint8_t>(code_of(r.error()));
        (void) !write(fds[1], &acked, sizeof acked);
        (void) !write(fds[1], &code, 1);
        _exit(0);
      }
      acked = r->stream_version;
    }
    _exit(11);
  }
  close(fds[1]);
  uint64_t acked = 0;
  uint8_t code = 0;
  ASSERT_EQ(read(fds[0], &acked, sizeof acked), static_cast<ssize_t>(sizeof acked));
  ASSERT_EQ(read(fds[0], &code, 1), 1);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  EXPECT_EQ(static_cast<store_errc>(code), store_errc::store_full);
  EXPECT_GT(acked, 10u);
  auto store = open_store(path);
  auto info = store->stream_info("s");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->version, acked) << "acknowledged appends lost, or unacknowledged ones kept";
  auto events = store->read_stream("s", 1, 10000);
  ASSERT_TRUE(events) << describe(events.error());
  EXPECT_EQ(events->size(), acked);
  EXPECT_TRUE(store->append("s", expected_version::exact(acked), {make_event(1)}));
}

TEST(lmdb_store, refuses_directories_it_does_not_own) {
  temp_dir dir;
  // Some other program's files.
  std::filesystem::create_directories(dir / "other");
  std::ofstream{dir / "other" / "notes.txt"} << "hello";
  auto r = lmdb_store::open({.path = (dir / "other").string()});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::foreign_store);
  // A data.mdb that is not LMDB at all.
  std::filesystem::create_directories(dir / "garbage");
  std::ofstream{dir / "garbage" / "data.mdb"} << std::string(8192, 'z');
  r = lmdb_store::open({.path = (dir / "garbage").string()});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::foreign_store) << describe(r.error());
  // A file instead of a directory.
  std::ofstream{dir / "file"} << "x";
  r = lmdb_store::open({.path = (dir / "file").string()});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::foreign_store);
  // Another program's LMDB database.
  std::filesystem::create_directories(dir / "foreign");
  {
    raw_env env{(dir / "foreign").string()};
    env.put(env.db("accounts", MDB_CREATE), "k", {1, 2, 3});
  }
  r = lmdb_store::open({.path = (dir / "foreign").string()});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::foreign_store);
  // The foreign database is left as it was.
  {
    raw_env env{(dir / "foreign").string()};
    EXPECT_EQ(env.get(env.db("accounts"), "k"), (std::vector<uint8_t>{1, 2, 3}));
  }
}

TEST(lmdb_store, refuses_another_format_version) {
  temp_dir dir;
  auto path = (dir / "store").string();
  {
    auto store = open_store(path);
    ASSERT_TRUE(store->append("s", expected_version::any(), make_events(1, 2)));
  }
  {
    raw_env env{path};
    env.put(env.db("meta"), "format_version", {0, 0, 0, 0, 0, 0, 0, 99});
  }
  auto r = lmdb_store::open({.path = path});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::unsupported_format_version);
  EXPECT_NE(describe(r.error()).find("99"), std::string::npos);
}

TEST(lmdb_store, damaged_records_are_reported_not_crashed_on) {
  temp_dir dir;
  auto path = (dir / "store").string();
  {
    auto store = open_store(path);
    ASSERT_TRUE(store->append("victim", expected_version::any(), make_events(1, 3)));
    ASSERT_TRUE(store->append("bystander", expected_version::any(), make_events(4, 3)));
  }
  {
    raw_env env{path};
    auto events = env.db("events");
    auto rec = env.get(events, position_key(2));
    rec[rec.size() / 2] ^= 0x5A; // flip bits in the middle
    env.put(events, position_key(2), rec);
    env.put(events, position_key(5), {0x01, 0x02, 0x03}); // truncated
  }
  auto store = open_store(path);
  EXPECT_EQ(read_error(*store), "corrupt_record");
  auto victim = store->read_stream("victim", 1, 10);
  ASSERT_FALSE(victim);
  EXPECT_EQ(code_of(victim.error()), store_errc::corrupt_record);
  EXPECT_NE(describe(victim.error()).find("position 2"), std::string::npos);
  auto after = store->read_all(3, 2);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->size(), 2u);
  auto bystander = store->read_stream("bystander", 2, 10);
  ASSERT_FALSE(bystander);
  EXPECT_EQ(code_of(bystander.error()), store_errc::corrupt_record);
  // The store keeps accepting writes, after the damage.
  auto r = store->append("fresh", expected_version::no_stream(), make_events(7, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->last_position, 7u);
}

/// CRC-32C (Castagnoli), bitwise: enough to forge valid checksums in tests.
uint32_t crc32c(const std::vector<uint8_t>& data, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= data[i];
    for (int k = 0; k < 8; ++k)
      c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

TEST(lmdb_store, every_record_ends_with_its_crc32c) {
  // The on-disk format: a record's last four bytes are the CRC-32C of the
  // rest, little-endian, whichever implementation the machine runs (the
  // CPU's instruction or the tables). Records of every length modulo 8.
  temp_dir dir;
  auto path = (dir / "store").string();
  constexpr uint64_t count = 64;
  {
    auto store = open_store(path);
    for (uint64_t i = 0; i < count; ++i) {
      auto ev = make_event(static_cast<int64_t>(i));
      ev.causation_id = std::string(i, 'c');
      ASSERT_TRUE(store->append("crc", expected_version::any(), {std::move(ev)}));
    }
  }
  raw_env env{path};
  auto events = env.db("events");
  std::set<size_t> lengths;
  for (uint64_t pos = 1; pos <= count; ++pos) {
    auto rec = env.get(events, position_key(pos));
    ASSERT_GT(rec.size(), 4u);
    size_t body = rec.size() - 4;
    uint32_t stored = 0;
    for (int i = 0; i < 4; ++i)
      stored |= uint32_t{rec[body + static_cast<size_t>(i)]} << (8 * i);
    EXPECT_EQ(stored, crc32c(rec, body)) << "record " << pos << " of " << rec.size() << " bytes";
    lengths.insert(rec.size() % 8);
  }
  EXPECT_EQ(lengths.size(), 8u);
}

TEST(lmdb_store, garbage_behind_a_valid_checksum_is_an_error_not_a_crash) {
  // A record whose bytes are wrong but whose checksum matches (a bug, or a
  // hostile file): every byte of the body in turn, with several bit
  // patterns. Each read must come back as events or as corrupt_record.
  temp_dir dir;
  auto path = (dir / "store").string();
  constexpr uint64_t count = 600;
  {
    auto store = open_store(path);
    for (uint64_t i = 0; i < count; i += 100)
      ASSERT_TRUE(store->append("s-" + std::to_string(i), expected_version::any(), make_events(i + 1, 100)));
  }
  {
    raw_env env{path};
    auto events = env.db("events");
    const uint8_t masks[] = {0xFF, 0x80, 0x01, 0x20, 0x7F};
    for (uint64_t pos = 1; pos <= count; ++pos) {
      auto rec = env.get(events, position_key(pos));
      size_t body = rec.size() - 4;
      size_t offset = 24 + (pos * 7) % (body - 24); // past the 24-byte header
      rec[offset] ^= masks[pos % std::size(masks)];
      uint32_t crc = crc32c(rec, body);
      for (int i = 0; i < 4; ++i)
        rec[body + static_cast<size_t>(i)] = static_cast<uint8_t>(crc >> (8 * i));
      env.put(events, position_key(pos), rec);
    }
  }
  auto store = open_store(path);
  size_t errors = 0;
  for (uint64_t pos = 1; pos <= count; ++pos) {
    auto r = store->read_all(pos, 1);
    if (!r) {
      EXPECT_EQ(code_of(r.error()), store_errc::corrupt_record) << describe(r.error());
      ++errors;
      continue;
    }
    // Damage inside the payload is the decoder's to find: a value or a
    // malformed_payload error.
    ASSERT_EQ(r->size(), 1u);
    auto json = event_registry::data_as_json(r->front().data);
    if (!json) {
      EXPECT_EQ(code_of(json.error()), store_errc::malformed_payload);
    }
  }
  EXPECT_GT(errors, 0u);
}

TEST(lmdb_store, short_streams_are_indexed_a_budget_per_transaction) {
  // Streams with few events wait in memory for the stream index; when the
  // writer is idle (or every 2 s under load) it indexes them, a few hundred
  // per transaction, so an append arriving meanwhile waits for one of those
  // small transactions, not for all of them.
  temp_dir dir;
  auto path = (dir / "store").string();
  auto store = open_store(path, {.path = path, .mode = durability::no_sync});
  constexpr uint64_t streams = 3000;
  for (uint64_t i = 0; i < streams; ++i)
    ASSERT_TRUE(store->append("short-" + std::to_string(i), expected_version::no_stream(), make_events(1, 1)));
  uint64_t indexed = 0;
  for (int i = 0; i < 500 && indexed < streams; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
    auto report = store->verify();
    ASSERT_TRUE(report) << describe(report.error());
    EXPECT_TRUE(report->ok());
    indexed = report->index_entries;
  }
  EXPECT_EQ(indexed, streams);
  // One-event streams are indexed only this way, whenever it happens (idle,
  // or in append groups if the appends took over 2 s), a budget at a time.
  EXPECT_GE(store->stats().index_transactions, (streams + 511) / 512) << "several small transactions, not one";
  for (uint64_t i : {uint64_t{0}, streams / 2, streams - 1}) {
    auto events = store->read_stream("short-" + std::to_string(i), 1, 10);
    ASSERT_TRUE(events);
    ASSERT_EQ(events->size(), 1u);
    EXPECT_EQ(events->front().position, i + 1);
  }
}

TEST(lmdb_store, one_store_per_path_per_process) {
  temp_dir dir;
  auto path = (dir / "store").string();
  auto first = open_store(path);
  auto second = lmdb_store::open({.path = path});
  ASSERT_FALSE(second);
  EXPECT_EQ(code_of(second.error()), store_errc::invalid_argument);
  auto respelled = lmdb_store::open({.path = dir.str() + "/./store/"});
  ASSERT_FALSE(respelled) << "another spelling of the same directory";
  EXPECT_NE(describe(respelled.error()).find("already open in this process"), std::string::npos)
    << describe(respelled.error());
  first.reset();
  EXPECT_TRUE(lmdb_store::open({.path = path}));
}

TEST(projection_store, one_store_per_path_per_process) {
  temp_dir dir;
  auto path = (dir / "models").string();
  auto first = projection_store::open({.path = path});
  ASSERT_TRUE(first);
  auto second = projection_store::open({.path = path});
  ASSERT_FALSE(second) << "a second environment on one file would drop the first one's locks when closed";
  EXPECT_EQ(code_of(second.error()), store_errc::invalid_argument);
  ASSERT_FALSE((*first)->write("m", 1, [](projection_store::writer& w) -> caf::error {
    w.put("t", "k", "v");
    return {};
  }));
  first->reset();
  auto again = projection_store::open({.path = path});
  ASSERT_TRUE(again) << describe(again.error());
  auto v = (*again)->get("m", "t", "k");
  ASSERT_TRUE(v && *v);
  EXPECT_EQ(**v, "v");
}

TEST(lmdb_store, read_only_reads_and_refuses_writes) {
  temp_dir dir;
  auto path = (dir / "store").string();
  auto r = lmdb_store::open({.path = path, .read_only = true});
  ASSERT_FALSE(r);
  {
    auto store = open_store(path);
    ASSERT_TRUE(store->append("s", expected_version::any(), make_events(1, 40)));
  }
  auto ro = open_store(path, {.path = "", .read_only = true});
  auto events = ro->read_stream("s", 1, 100);
  ASSERT_TRUE(events) << describe(events.error());
  EXPECT_EQ(events->size(), 40u);
  EXPECT_EQ(ro->head_position(), 40u);
  auto w = ro->append("s", expected_version::any(), make_events(1, 1));
  ASSERT_FALSE(w);
  EXPECT_EQ(code_of(w.error()), store_errc::invalid_argument);
  EXPECT_FALSE(ro->save_checkpoint("c", 1));
}

class durability_modes : public ::testing::TestWithParam<durability> {};

TEST_P(durability_modes, commits_survive_reopen) {
  temp_dir dir;
  auto path = (dir / "store").string();
  {
    auto store = open_store(path, {.path = "", .mode = GetParam()});
    for (int i = 0; i < 20; ++i)
      ASSERT_TRUE(store->append("s", expected_version::exact(static_cast<uint64_t>(i)), {make_event(i)}));
  }
  auto store = open_store(path);
  EXPECT_EQ(store->stream_info("s")->version, 20u);
}

INSTANTIATE_TEST_SUITE_P(modes, durability_modes,
                         ::testing::Values(durability::durable, durability::no_meta_sync, durability::no_sync),
                         [](const auto& info) {
                           switch (info.param) {
                             case durability::durable: return std::string{"durable"};
                             case durability::no_meta_sync: return std::string{"no_meta_sync"};
                             case durability::no_sync: return std::string{"no_sync"};
                           }
                           return std::string{"unknown"};
                         });

} // namespace

TEST(uuid, time_ordered_ids_are_version_7_and_sort_by_time) {
  auto a = uuid::time_ordered();
  std::this_thread::sleep_for(std::chrono::milliseconds{2});
  auto b = uuid::time_ordered();
  EXPECT_EQ(a.bytes[6] >> 4, 7);
  EXPECT_EQ(a.bytes[8] >> 6, 2); // variant 1
  EXPECT_LT(a, b);
  EXPECT_LT(a.to_string(), b.to_string()); // as text too: row keys sort the same way
  EXPECT_NE(uuid::time_ordered(), uuid::time_ordered());
  EXPECT_EQ(uuid::parse(a.to_string()), a);
}
