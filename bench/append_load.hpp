#pragma once

// The append load both store suites run (LMDB and PostgreSQL).

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>
#include <map>
#include <thread>
#include <vector>

#include <msgpack.hpp>

#include "bench.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/postgres_store.hpp"

namespace sourcery::bench {

using namespace sourcery::persistence;

inline uint64_t operations_of(const lmdb_stats& s) { return s.operations; }
inline uint64_t operations_of(const postgres_stats& s) { return s.appends; }

/// A small deposit-like event payload: {"account": "...", "amount": n}.
inline bytes payload(int64_t n) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  pk.pack_map(2);
  pk.pack(std::string{"account"});
  pk.pack(std::string{"account-042"});
  pk.pack(std::string{"amount"});
  pk.pack(n);
  return {reinterpret_cast<const uint8_t*>(buf.data()), reinterpret_cast<const uint8_t*>(buf.data()) + buf.size()};
}

inline double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}

/// `appenders` concurrent appenders, each appending one event at a time to its
/// own stream for `duration`, as actors would: an appender is not a thread
/// but a state machine; its completion is queued to a pool of two client
/// threads (the actor scheduler's role), which issue its next append.
/// Returns events/s; `per_commit` gets the mean group size.
template <class Store>
double durable_appends(Store& store, const std::string& tag, int appenders, std::chrono::milliseconds duration,
                       double& per_commit) {
  struct appender {
    std::string stream;
    uint64_t version = 0;
  };
  std::vector<appender> state(static_cast<size_t>(appenders));
  for (int t = 0; t < appenders; ++t)
    state[static_cast<size_t>(t)].stream = tag + "-" + std::to_string(appenders) + "-" + std::to_string(t);
  std::mutex mtx;
  std::condition_variable cv;
  std::deque<size_t> ready;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> total{0};
  std::atomic<int> in_flight{0};
  auto issue = [&](size_t i) {
    auto& a = state[i];
    event_data ev;
    ev.type = "bank.deposited";
    ev.data = payload(static_cast<int64_t>(a.version));
    in_flight.fetch_add(1);
    store.append_async(a.stream, expected_version::exact(a.version), {std::move(ev)},
                       [&, i](caf::expected<append_result> r) {
                         if (!r) {
                           std::fprintf(stderr, "append failed: %s\n", describe(r.error()).c_str());
                           std::abort();
                         }
                         state[i].version = r->stream_version;
                         total.fetch_add(1, std::memory_order_relaxed);
                         bool was_empty;
                         {
                           std::lock_guard guard{mtx};
                           was_empty = ready.empty();
                           ready.push_back(i);
                         }
                         in_flight.fetch_sub(1);
                         if (was_empty) // one wake-up per burst of answers
                           cv.notify_one();
                       });
  };
  auto before = store.stats();
  auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < state.size(); ++i)
    issue(i);
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c)
    clients.emplace_back([&] {
      std::unique_lock lock{mtx};
      while (!stop.load()) {
        cv.wait(lock, [&] { return stop.load() || !ready.empty(); });
        std::vector<size_t> mine(ready.begin(), ready.end());
        ready.clear();
        lock.unlock();
        for (auto i : mine)
          if (!stop.load())
            issue(i);
        lock.lock();
      }
    });
  std::this_thread::sleep_for(duration);
  {
    std::lock_guard guard{mtx};
    stop = true;
  }
  cv.notify_all();
  for (auto& th : clients)
    th.join();
  double secs = seconds_since(start);
  uint64_t counted = total.load();
  while (in_flight.load() > 0)
    std::this_thread::yield();
  auto after = store.stats();
  per_commit = static_cast<double>(operations_of(after) - operations_of(before))
               / static_cast<double>(std::max<uint64_t>(1, after.commits - before.commits));
  return static_cast<double>(counted) / secs;
}

/// Appends one stream of `events` events (batches of 1,000), then reads
/// `$all` and that stream from the start in pages of 1,000 and reports
/// events/s as `<prefix>read_all` and `<prefix>read_stream`. False if an
/// append failed.
inline bool measure_reads(event_store& store, const std::string& suite, const std::string& prefix, size_t events) {
  for (size_t done = 0; done < events; done += 1000) {
    std::vector<event_data> batch;
    for (size_t i = 0; i < 1000; ++i) {
      event_data ev;
      ev.type = "bank.deposited";
      ev.data = payload(static_cast<int64_t>(done + i));
      batch.push_back(std::move(ev));
    }
    if (!store.append("long-stream", expected_version::any(), std::move(batch)))
      return false;
  }
  auto start = std::chrono::steady_clock::now();
  uint64_t n = 0;
  for (uint64_t from = 1;;) {
    auto page = store.read_all(from, 1000);
    if (!page || page->empty())
      break;
    n += page->size();
    from = page->back().position + 1;
  }
  report(suite, prefix + "read_all", static_cast<double>(n) / seconds_since(start), "events/s");
  start = std::chrono::steady_clock::now();
  n = 0;
  for (uint64_t from = 1;;) {
    auto batch = store.read_stream("long-stream", from, 1000);
    if (!batch || batch->empty())
      break;
    n += batch->size();
    from = batch->back().stream_version + 1;
  }
  report(suite, prefix + "read_stream", static_cast<double>(n) / seconds_since(start), "events/s");
  return true;
}

} // namespace sourcery::bench
