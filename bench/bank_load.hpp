#pragma once

// Driving the bank domain through a running application: shared by the
// dispatch and handlers suites.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <typeindex>
#include <unordered_map>
#include <vector>

#include "stats.hpp"
#include "../examples/bank/routes.hpp"
#include "bench.hpp"
#include "sourcery/runtime/application.hpp"

namespace sourcery::bench {

using namespace bank;

/// Creates the bench's own store at `uri`, as an operator would with
/// `sourcery init`; false after saying why.
inline bool init_bench_store(const persistence::store_uri& uri) {
  auto made = persistence::init_store(uri);
  if (!made)
    std::fprintf(stderr, "sourcery-bench: cannot create a store on %s: %s\n", uri.to_string().c_str(),
                 describe_error(made.error()).c_str());
  return static_cast<bool>(made);
}

inline std::unique_ptr<application> start_app(const std::string& dir, bool in_memory,
                                       std::chrono::milliseconds lifespan = std::chrono::milliseconds{0},
                                       aggregate_options opts = {}) {
  application_config cfg;
  cfg.data_dir = dir;
  cfg.in_memory = in_memory;
  aggregate_settings accounts;
  accounts.lifespan = lifespan.count() > 0 ? sourcery::lifespan::timeout(lifespan) : sourcery::lifespan::infinite();
  accounts.snapshot_every = opts.snapshot_every;
  accounts.max_retries = opts.max_retries;
  auto app = application::start(cfg, bank::routes(accounts));
  if (!app) {
    std::fprintf(stderr, "cannot start: %s\n", describe_error(app.error()).c_str());
    std::exit(1);
  }
  return std::move(*app);
}

using sourcery::bench::percentile;

/// `total` commands from `dispatchers` concurrent callers, each waiting for
/// its answer before sending the next (closed loop). `make(i)` builds command
/// i. Returns commands/s; fills `latencies` (µs).
template <class Make>
double closed_loop(application& app, int dispatchers, int total, Make make, std::vector<double>& latencies,
                   dispatch_options opts = {}) {
  std::mutex mtx;
  std::condition_variable cv;
  std::atomic<int> next{0};
  std::atomic<int> finished{0};
  std::atomic<int> failures{0};
  latencies.assign(static_cast<size_t>(total), 0.0);
  std::function<void()> issue = [&] {
    int i = next.fetch_add(1);
    if (i >= total) {
      if (finished.fetch_add(1) + 1 == dispatchers) {
        std::lock_guard guard{mtx};
        cv.notify_all();
      }
      return;
    }
    auto t0 = std::chrono::steady_clock::now();
    app.dispatch_async(make(i), opts, [&, i, t0](caf::expected<dispatch_result> r) {
      if (!r || !r->accepted)
        failures.fetch_add(1);
      latencies[static_cast<size_t>(i)] =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      issue();
    });
  };
  auto start = std::chrono::steady_clock::now();
  for (int d = 0; d < dispatchers; ++d)
    issue();
  {
    std::unique_lock lock{mtx};
    cv.wait(lock, [&] { return finished.load() == dispatchers; });
  }
  double secs = seconds_since(start);
  if (failures.load() > 0)
    std::fprintf(stderr, "%d commands failed or were rejected\n", failures.load());
  return total / secs;
}

inline void open_accounts(application& app, int n) {
  std::vector<double> ignored;
  closed_loop(app, 64, n, [](int i) { return open_account{std::to_string(i), "owner"}; }, ignored);
}

} // namespace sourcery::bench
