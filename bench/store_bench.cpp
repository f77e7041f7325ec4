// The event store's throughput: durable appends with 1, 16 and 256 concurrent
// appenders (group commit), reads of $all and of one stream, and, as the
// ceiling, raw LMDB puts batched 1,000 per durable commit in the same run.

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <atomic>
#include <map>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <filesystem>
#include <thread>
#include <vector>

#include <lmdb.h>
#include <msgpack.hpp>

#include "append_load.hpp"
#include "bench.hpp"
#include "sourcery/persistence/lmdb_store.hpp"

namespace sourcery::bench {

namespace {

using namespace sourcery::persistence;
namespace fs = std::filesystem;


/// Raw LMDB: `batch` puts of ~120-byte values per durable commit.
double raw_lmdb_ceiling(const fs::path& dir, size_t total, size_t batch) {
  fs::create_directories(dir);
  MDB_env* env = nullptr;
  mdb_env_create(&env);
  mdb_env_set_mapsize(env, size_t{4} << 30);
  mdb_env_set_maxdbs(env, 2);
  if (mdb_env_open(env, dir.c_str(), 0, 0644) != 0)
    return 0;
  MDB_txn* txn = nullptr;
  MDB_dbi dbi;
  mdb_txn_begin(env, nullptr, 0, &txn);
  mdb_dbi_open(txn, "events", MDB_CREATE, &dbi);
  mdb_txn_commit(txn);
  std::vector<uint8_t> value(120, 0x42);
  auto start = std::chrono::steady_clock::now();
  uint64_t key = 0;
  for (size_t done = 0; done < total; done += batch) {
    mdb_txn_begin(env, nullptr, 0, &txn);
    for (size_t i = 0; i < batch; ++i) {
      uint8_t kb[8];
      ++key;
      for (int b = 0; b < 8; ++b)
        kb[b] = static_cast<uint8_t>(key >> (8 * (7 - b)));
      MDB_val k{8, kb}, v{value.size(), value.data()};
      mdb_put(txn, dbi, &k, &v, MDB_APPEND);
    }
    mdb_txn_commit(txn);
  }
  double secs = seconds_since(start);
  mdb_env_close(env);
  return static_cast<double>(total) / secs;
}

} // namespace

int run_store_suite(const options& opts) {
  if (opts.store.rfind("postgres", 0) == 0)
    return run_pg_store_suite(opts);
  const std::string suite = "store";
  fs::path root = fs::path{opts.dir} / ("store-" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto ms = [&](int base) { return std::chrono::milliseconds{static_cast<int>(base * opts.scale)}; };

  lmdb_options lo;
  lo.path = (root / "store").string();
  lo.initial_map_size = size_t{1} << 30;
  // BENCH_NOSYNC=1 drops the flushes, to see the store's CPU path alone.
  if (std::getenv("BENCH_NOSYNC") != nullptr)
    lo.mode = durability::no_sync;
  auto store = lmdb_store::open(lo);
  if (!store) {
    std::fprintf(stderr, "cannot open store: %s\n", describe(store.error()).c_str());
    return 1;
  }
  // The cost of a durable commit drifts a lot on a shared virtual disk, so
  // the ceiling and the store run in alternating rounds and each reports its
  // median: the ratio between them is what the figures are for.
  const int rounds = 5;
  // BENCH_ONLY=append_256 (or _1, _16) runs those appenders alone, for profiling.
  std::vector<double> ceiling, ceiling_256;
  std::map<int, std::vector<double>> rates, per_commit;
  const size_t raw_events = static_cast<size_t>(40'000 * opts.scale) / 1000 * 1000 + 1000;
  for (int round = 0; round < rounds; ++round) {
    ceiling.push_back(raw_lmdb_ceiling(root / ("raw-" + std::to_string(round)), raw_events, 1000));
    // What 256 one-event appenders could reach at best: 256 puts per commit.
    ceiling_256.push_back(raw_lmdb_ceiling(root / ("raw256-" + std::to_string(round)), raw_events / 1000 * 256, 256));
    for (int appenders : {1, 16, 256}) {
      if (!wanted("append_" + std::to_string(appenders)))
        continue;
      double pc = 0;
      rates[appenders].push_back(durable_appends(**store, "round" + std::to_string(round), appenders, ms(appenders == 1 ? 300 : 600), pc));
      per_commit[appenders].push_back(pc);
    }
  }
  report(suite, "raw_lmdb_ceiling", median(ceiling), "events/s");
  for (auto& [appenders, r] : rates) { // those that ran, in order
    report(suite, "append_durable_" + std::to_string(appenders), median(r), "events/s");
    report(suite, "append_durable_" + std::to_string(appenders) + "_per_commit", median(per_commit[appenders]),
           "appends/commit");
  }
  report(suite, "raw_lmdb_256_per_commit", median(ceiling_256), "events/s");
  // The most any store doing one durable LMDB commit per group of 256
  // one-event appends can reach against the ceiling: raw puts, nothing else.
  report(suite, "raw_lmdb_256_vs_ceiling", median(ceiling_256) / median(ceiling), "ratio");
  if (auto r256 = rates.find(256); r256 != rates.end()) {
    report(suite, "append_durable_256_vs_ceiling", median(r256->second) / median(ceiling), "ratio");
    report(suite, "append_durable_256_vs_raw_256", median(r256->second) / median(ceiling_256), "ratio");
  }
  if (!wanted("reads")) { // profiling one workload of appends
    store->reset();
    fs::remove_all(root);
    return 0;
  }

  // One long stream for the stream read; everything written so far for $all.
  if (!measure_reads(**store, suite, "", static_cast<size_t>(100'000 * opts.scale)))
    return 1;
  store->reset();
  fs::remove_all(root);
  return 0;
}

} // namespace sourcery::bench
