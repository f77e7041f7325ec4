// Dispatch through the whole runtime on the bank domain (1,000 accounts):
// W1 throughput and latency, W4 rehydration, W5 memory per aggregate and opens/s.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <malloc.h>
#include <mutex>
#include <random>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "../examples/bank/routes.hpp"
#include "bench.hpp"
#include "sourcery/runtime/application.hpp"

namespace sourcery::bench {

namespace {

using namespace bank;
namespace fs = std::filesystem;


std::unique_ptr<application> start_app(const std::string& dir, bool in_memory,
                                       std::chrono::milliseconds lifespan = std::chrono::milliseconds{0},
                                       aggregate_options opts = {}) {
  application_config cfg;
  cfg.data_dir = dir;
  cfg.in_memory = in_memory;
  std::unordered_map<std::type_index, aggregate_settings> settings;
  settings[std::type_index{typeid(account)}] = aggregate_settings{lifespan, opts};
  auto app = application::start(cfg, bank::routes(), {}, settings);
  if (!app) {
    std::fprintf(stderr, "cannot start: %s\n", describe_error(app.error()).c_str());
    std::exit(1);
  }
  return std::move(*app);
}

double percentile(std::vector<double> xs, double p) {
  std::sort(xs.begin(), xs.end());
  return xs.empty() ? 0 : xs[std::min(xs.size() - 1, static_cast<size_t>(p * static_cast<double>(xs.size())))];
}

/// `total` commands from `dispatchers` concurrent callers, each waiting for
/// its answer before sending the next (closed loop). `make(i)` builds command
/// i. Returns commands/s; fills `latencies` (µs).
template <class Make>
double closed_loop(application& app, int dispatchers, int total, Make make, std::vector<double>& latencies) {
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
    app.dispatch_async(make(i), {}, [&, i, t0](caf::expected<dispatch_result> r) {
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

void open_accounts(application& app, int n) {
  std::vector<double> ignored;
  closed_loop(app, 64, n, [](int i) { return open_account{std::to_string(i), "owner"}; }, ignored);
}

void w1(const std::string& name, application& app, int dispatchers, int commands) {
  open_accounts(app, 1000);
  std::vector<double> lat;
  std::mt19937 rng{42};
  std::vector<int> target(static_cast<size_t>(commands));
  for (auto& t : target)
    t = static_cast<int>(rng() % 1000);
  double rate = closed_loop(app, dispatchers, commands,
                            [&](int i) { return deposit{std::to_string(target[static_cast<size_t>(i)]), 1}; }, lat);
  report("dispatch", name, rate, "commands/s");
  report("dispatch", name + "_p50", percentile(lat, 0.50), "us");
  report("dispatch", name + "_p99", percentile(lat, 0.99), "us");
}

/// W4: the first command to an account with 10,000 events, without and with
/// a snapshot; the median of `rounds` accounts of each kind, measured after
/// one warm-up account so the registry's first-use costs stay out.
void w4(const std::string& dir) {
  constexpr int rounds = 5;
  auto app = start_app(dir, false);
  auto& store = app->store();
  persistence::event_registry types;
  register_events<account>(types);
  account snap_state;
  snap_state.open = true;
  snap_state.balance = 9999;
  msgpack::sbuffer buf;
  msgpack::pack(buf, snap_state);
  auto id = [](const char* kind, int i) { return std::string{kind} + "-" + std::to_string(i); };
  auto stream = [&](const char* kind, int i) { return "account-" + id(kind, i); }; // the router's prefix
  for (const char* kind : {"plain", "snap"})
    for (int i = 0; i <= rounds; ++i) {
      std::vector<persistence::event_data> batch{*types.encode(account_opened{"w4"})};
      for (int n = 1; n < 10'000; ++n) {
        batch.push_back(*types.encode(money_deposited{1}));
        if (batch.size() == 1000) {
          store.append(stream(kind, i), persistence::expected_version::any(), std::move(batch));
          batch.clear();
        }
      }
      if (!batch.empty())
        store.append(stream(kind, i), persistence::expected_version::any(), std::move(batch));
      if (std::string_view{kind} == "snap")
        store.save_snapshot({stream(kind, i), 10'000, account::snapshot_version, "aggregate",
                             persistence::bytes(buf.data(), buf.data() + buf.size()), 0});
    }
  // The store indexes streams while idle; a real cold aggregate finds its
  // stream indexed, so give the writer a moment.
  std::this_thread::sleep_for(std::chrono::milliseconds{300});
  for (auto [kind, name] : {std::pair{"plain", "w4_rehydrate_10k"}, std::pair{"snap", "w4_rehydrate_10k_snapshot"}}) {
    std::vector<double> times;
    for (int i = 0; i <= rounds; ++i) {
      auto start = std::chrono::steady_clock::now();
      auto r = app->dispatch(deposit{id(kind, i), 1});
      double ms = seconds_since(start) * 1000.0;
      if (!r || !r->accepted || r->version != 10'001) {
        std::fprintf(stderr, "w4: unexpected answer\n");
        std::exit(1);
      }
      if (i > 0)
        times.push_back(ms);
    }
    report("dispatch", name, percentile(times, 0.5), "ms");
  }
}

void w5(const std::string& dir, int n) {
  // Memory in a child process with one malloc arena, so heap counters see all threads.
  std::fflush(stdout);
  pid_t pid = ::fork();
  if (pid == 0) {
    mallopt(M_ARENA_MAX, 1);
    auto app = start_app(dir + "-mem", false);
    open_accounts(*app, 1000); // warm up
    auto before = mallinfo2().uordblks;
    std::vector<double> ignored;
    closed_loop(*app, 256, n, [](int i) { return open_account{"m" + std::to_string(i), "owner"}; }, ignored);
    auto after = mallinfo2().uordblks;
    report("dispatch", "w5_bytes_per_aggregate", static_cast<double>(after - before) / n, "bytes");
    std::fflush(stdout);
    std::_Exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  auto app = start_app(dir, false);
  std::vector<double> ignored;
  double rate = closed_loop(*app, 256, n, [](int i) { return open_account{"o" + std::to_string(i), "owner"}; }, ignored);
  report("dispatch", "w5_opens", rate, "aggregates/s");
}

} // namespace

int run_dispatch_suite(const options& opts) {
  fs::path root = fs::path{opts.dir} / ("dispatch-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  const int commands = static_cast<int>(100'000 * opts.scale);
  {
    auto app = start_app("", true);
    w1("w1_memory_16", *app, 16, commands);
  }
  {
    auto app = start_app((root / "w1").string(), false);
    w1("w1_durable_256", *app, 256, commands);
  }
  w4((root / "w4").string());
  w5((root / "w5").string(), static_cast<int>(100'000 * opts.scale));
  fs::remove_all(root);
  return 0;
}

} // namespace sourcery::bench
