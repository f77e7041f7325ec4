#pragma once

// A store holding what a real one holds, and the kinds of damage `verify`
// must find in it: shared by the store's tests and the tool's.

#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../persistence/test_events.hpp"
#include "checked.hpp"
#include "raw_lmdb.hpp"
#include "sourcery/persistence/lmdb_store.hpp"

namespace sourcery::testing {

using namespace sourcery::persistence;

inline std::unique_ptr<persistence::lmdb_store> open_store(const std::string& path, bool read_only = false) {
  lmdb_options opts;
  opts.path = path;
  opts.read_only = read_only;
  return checked(lmdb_store::open(opts), "open " + path); // never null
}

/// A store with what a real one holds: interleaved streams, a deleted one,
/// snapshots and checkpoints. Stream "long" (number 1) is at positions 1-40,
/// then "a" (2 events) and "b" (1) take turns five times: 41-55; "gone" 56-57.
/// The store is closed after its writer went idle, which indexes everything.
inline void fill(const std::string& path, bool verify_live = false) {
  auto store = open_store(path);
  ASSERT_TRUE(store->append("long", expected_version::no_stream(), make_events(1, 40))); // indexed at once
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(store->append("a", expected_version::any(), make_events(100 + i, 2)));
    ASSERT_TRUE(store->append("b", expected_version::any(), make_events(200 + i, 1)));
  }
  ASSERT_TRUE(store->append("gone", expected_version::any(), make_events(300, 2)));
  ASSERT_TRUE(store->delete_stream("gone", expected_version::any()));
  ASSERT_TRUE(store->save_snapshot({"long", 30, 1, "state", map_payload(30), 0}));
  ASSERT_TRUE(store->save_checkpoint("handler:audit", 20));
  ASSERT_TRUE(store->save_checkpoint("handler:mail", 57));
  if (verify_live) {
    // While the writer runs, with some streams' newest events not yet indexed.
    ASSERT_TRUE(store->append("a", expected_version::any(), make_events(1, 1)));
    auto report = store->verify();
    ASSERT_TRUE(report);
    EXPECT_TRUE(report->ok()) << report->problems.front().kind << ": " << report->problems.front().message;
    EXPECT_EQ(report->events, 58u);
    return;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds{200});
}

/// One kind of damage: what is done to the raw databases, and the problem
/// kinds verify must report for it.
struct damage {
  const char* name;
  std::function<void(raw_env&)> inflict;
  std::set<std::string> expected;
};

inline std::vector<damage> damages() {
  return {
    {"event_removed", [](raw_env& env) { env.del(env.db("events"), position_key(45)); },
     {"log_gap", "stream_order", "index_mismatch"}},
    {"record_flipped",
     [](raw_env& env) {
       auto events = env.db("events");
       auto rec = env.get(events, position_key(3));
       rec[rec.size() / 2] ^= 0x5A;
       env.put(events, position_key(3), rec);
     },
     {"bad_record", "stream_order"}},
    {"index_entry_removed", [](raw_env& env) { env.del(env.db("stream_index"), index_key(1, 7)); },
     {"index_missing"}},
    {"index_entry_repointed",
     [](raw_env& env) { env.put(env.db("stream_index"), index_key(1, 7), {0, 0, 0, 0, 0, 0, 0, 8}); },
     {"index_mismatch"}},
    {"index_entry_of_no_stream",
     [](raw_env& env) { env.put(env.db("stream_index"), index_key(99, 1), {0, 0, 0, 0, 0, 0, 0, 1}); },
     {"index_orphan"}},
    {"stream_record_version_changed",
     [](raw_env& env) {
       auto streams = env.db("streams");
       auto rec = env.get(streams, "a");
       rec[15] += 1; // the version, big-endian at bytes 8..15
       env.put(streams, "a", rec);
     },
     {"stream_version"}},
    {"stream_record_truncated", [](raw_env& env) { env.put(env.db("streams"), "b", {1, 2, 3}); },
     {"bad_stream_record", "index_orphan"}},
    {"stream_record_removed", [](raw_env& env) { env.del(env.db("streams"), "b"); },
     {"unknown_stream", "index_orphan"}},
    {"checkpoint_ahead",
     [](raw_env& env) { env.put(env.db("checkpoints"), "handler:mail", {0, 0, 0, 0, 0, 0, 1, 0}); },
     {"checkpoint_ahead"}},
    {"checkpoint_truncated", [](raw_env& env) { env.put(env.db("checkpoints"), "handler:audit", {1}); },
     {"bad_checkpoint"}},
    {"snapshot_ahead",
     [](raw_env& env) {
       auto snaps = env.db("snapshots");
       env.put(snaps, "a", env.get(snaps, "long")); // version 30 > 10
     },
     {"snapshot_ahead"}},
    {"snapshot_garbled", [](raw_env& env) { env.put(env.db("snapshots"), "long", {0xc1, 0xc1}); }, {"bad_snapshot"}},
  };
}

} // namespace sourcery::testing
