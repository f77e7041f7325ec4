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

#include <libpq-fe.h>

#include "bank_load.hpp"
#include "sourcery/persistence/store_uri.hpp"

namespace sourcery::bench {

namespace {

using namespace bank;
namespace fs = std::filesystem;


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
    auto before = heap_in_use();
    std::vector<double> ignored;
    closed_loop(*app, 256, n, [](int i) { return open_account{"m" + std::to_string(i), "owner"}; }, ignored);
    auto after = heap_in_use();
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

/// W1 durable on PostgreSQL, in a schema of its own dropped at the end.
int pg_dispatch(const options& opts, int commands) {
  auto uri = persistence::store_uri::parse(opts.store);
  if (!uri) {
    std::fprintf(stderr, "sourcery-bench: %s\n", persistence::describe(uri.error()).c_str());
    return 1;
  }
  const std::string schema = "bench_dispatch_" + std::to_string(::getpid());
  uri->schema = schema;
  {
    application_config cfg;
    cfg.store_uri = uri->text();
    auto app = application::start(cfg, bank::routes());
    if (!app) {
      std::fprintf(stderr, "sourcery-bench: cannot start on %s: %s\n", uri->to_string().c_str(),
                   describe_error(app.error()).c_str());
      return 1;
    }
    if (wanted("w1"))
      w1("pg_w1_durable_256", **app, 256, commands);
  }
  PGconn* c = PQconnectdb(uri->location.c_str());
  PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr); // "drop cascades to ..."
  PQclear(PQexec(c, ("DROP SCHEMA \"" + schema + "\" CASCADE").c_str()));
  PQfinish(c);
  return 0;
}

int run_dispatch_suite(const options& opts) {
  if (opts.store.rfind("postgres", 0) == 0)
    return pg_dispatch(opts, static_cast<int>(100'000 * opts.scale));
  fs::path root = fs::path{opts.dir} / ("dispatch-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  const int commands = static_cast<int>(100'000 * opts.scale);
  if (wanted("w1")) {
    {
      auto app = start_app("", true);
      w1("w1_memory_16", *app, 16, commands);
    }
    auto app = start_app((root / "w1").string(), false);
    w1("w1_durable_256", *app, 256, commands);
  }
  if (wanted("w4"))
    w4((root / "w4").string());
  if (wanted("w5"))
    w5((root / "w5").string(), static_cast<int>(100'000 * opts.scale));
  fs::remove_all(root);
  return 0;
}

} // namespace sourcery::bench
