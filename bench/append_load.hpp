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

} // namespace sourcery::bench
