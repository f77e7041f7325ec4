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

#include "../examples/todo/todo_tenants.hpp"
#include "bank_load.hpp"
#include "sourcery/persistence/personal.hpp"
#include "sourcery/persistence/store_uri.hpp"

namespace sourcery::bench {

namespace {

using namespace bank;
namespace fs = std::filesystem;


double w1(const std::string& name, application& app, int dispatchers, int commands) {
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
  return rate;
}

// -- personal data ---------------------------------------------------------------

/// Wallets paid into by named payers: every event carries a personal field
/// (the payer's name, sealed with the wallet's key).
struct pay_in {
  std::string wallet, payer;
  int64_t amount = 0;
  SOURCERY_FIELDS(wallet, payer, amount)
};
struct paid_in {
  sourcery::personal<std::string> payer;
  int64_t amount = 0;
  SOURCERY_EVENT("bench.paid_in", payer, amount)
};
struct wallet {
  using event = std::variant<paid_in>;
  int64_t balance = 0;
  sourcery::outcome<event> execute(const pay_in& c) const { return paid_in{c.payer, c.amount}; }
  void apply(const paid_in& e) { balance += e.amount; }
};

/// The same wallet with the payer's name in plaintext: what sealing costs
/// on its own (w1_personal_vs_plain_ratio).
struct paid_in_plain {
  std::string payer;
  int64_t amount = 0;
  SOURCERY_EVENT("bench.paid_in_plain", payer, amount)
};
struct plain_wallet {
  using event = std::variant<paid_in_plain>;
  int64_t balance = 0;
  sourcery::outcome<event> execute(const pay_in& c) const { return paid_in_plain{c.payer, c.amount}; }
  void apply(const paid_in_plain& e) { balance += e.amount; }
};

template <class Wallet = wallet>
std::unique_ptr<application> start_wallets(const std::string& dir, bool in_memory) {
  application_config cfg;
  cfg.data_dir = dir;
  cfg.in_memory = in_memory;
  sourcery::router r;
  r.aggregate<Wallet>([](const auto& c) { return c.wallet; }, "wallet-").template dispatch<pay_in>();
  auto app = application::start(cfg, std::move(r));
  if (!app) {
    std::fprintf(stderr, "cannot start: %s\n", describe_error(app.error()).c_str());
    std::exit(1);
  }
  return std::move(*app);
}

/// W1 on the memory store (w1_memory_16) and, with `personal`, the same
/// with a personal field in every event (w1_personal_16: the payer's name,
/// sealed with the wallet's key). The two alternate in rounds, so that a
/// drift of the machine falls on both, and their ratio is taken over the
/// rounds (w1_personal_ratio). A third phase runs the same wallets with the
/// name in plaintext (w1_plain_wallet_16), so that what sealing costs shows
/// apart from the difference between a wallet and an account
/// (w1_personal_vs_plain_ratio). One application at a time: an idle one's
/// scheduler threads would take CPU from the other.
void w1_memory(int dispatchers, int commands, bool personal) {
  // Five rounds of `commands` each: phases of a tenth of a second swung
  // the ratio between 0.7 and 1.
  constexpr int rounds = 5;
  const int per_round = commands;
  std::mt19937 rng{42};
  std::vector<int> target(static_cast<size_t>(rounds * per_round));
  for (auto& t : target)
    t = static_cast<int>(rng() % 1000);
  std::vector<double> lat, personal_lat, plain_lat, warm_up;
  double seconds = 0, personal_seconds = 0, plain_seconds = 0;
  for (int r = 0; r < rounds; ++r) {
    auto at = [&](int i) { return target[static_cast<size_t>(r * per_round + i)]; };
    {
      auto app = start_app("", true);
      open_accounts(*app, 1000);
      seconds += per_round / closed_loop(*app, dispatchers, per_round,
                                         [&](int i) { return deposit{std::to_string(at(i)), 1}; }, lat);
    }
    if (!personal)
      continue;
    auto wallets = [&](auto app, std::vector<double>& latencies) {
      // Every wallet opened (and its key created) first, as W1 opens its accounts first.
      closed_loop(*app, 64, 1000, [](int i) { return pay_in{std::to_string(i), "Payer " + std::to_string(i), 1}; },
                  warm_up);
      return per_round / closed_loop(*app, dispatchers, per_round, [&](int i) {
        return pay_in{std::to_string(at(i)), "Payer Person " + std::to_string(at(i)), 1};
      }, latencies);
    };
    personal_seconds += wallets(start_wallets<wallet>("", true), personal_lat);
    plain_seconds += wallets(start_wallets<plain_wallet>("", true), plain_lat);
  }
  double rate = rounds * per_round / seconds;
  report("dispatch", "w1_memory_16", rate, "commands/s");
  report("dispatch", "w1_memory_16_p50", percentile(lat, 0.50), "us");
  report("dispatch", "w1_memory_16_p99", percentile(lat, 0.99), "us");
  if (!personal)
    return;
  double personal_rate = rounds * per_round / personal_seconds;
  report("dispatch", "w1_personal_16", personal_rate, "commands/s");
  report("dispatch", "w1_personal_16_p99", percentile(personal_lat, 0.99), "us");
  report("dispatch", "w1_personal_ratio", personal_rate / rate, "ratio");
  double plain_rate = rounds * per_round / plain_seconds;
  report("dispatch", "w1_plain_wallet_16", plain_rate, "commands/s");
  report("dispatch", "w1_personal_vs_plain_ratio", personal_rate / plain_rate, "ratio");
}

/// One call forgets a subject with 10,000 events: durable LMDB.
void forget_10k(const std::string& dir) {
  auto app = start_wallets(dir, false);
  persistence::event_registry types;
  types.add<paid_in>(paid_in::type_name);
  std::vector<persistence::event_data> batch;
  for (int n = 0; n < 10'000; ++n) {
    batch.push_back(*types.encode(paid_in{"Payer " + std::to_string(n), 1}));
    if (batch.size() == 1000) {
      if (!app->store().append("wallet-big", persistence::expected_version::any(), std::move(batch))) {
        std::fprintf(stderr, "forget_10k: append failed\n");
        std::exit(1);
      }
      batch.clear();
    }
  }
  auto start = std::chrono::steady_clock::now();
  auto forgot = app->forget("wallet-big");
  double ms = seconds_since(start) * 1000.0;
  auto state = app->aggregate_state<wallet>("wallet-big");
  auto first = app->store().read_stream("wallet-big", 1, 1);
  if (!forgot || !*forgot || !state || state->balance != 10'000 || !first || first->empty()
      || !types.decode<paid_in>(first->front())->payer.forgotten()) {
    std::fprintf(stderr, "forget_10k: the subject was not forgotten (forget %s, balance %s)\n",
                 !forgot ? describe_error(forgot.error()).c_str() : *forgot ? "had a key" : "no key",
                 !state ? describe_error(state.error()).c_str() : std::to_string(state->balance).c_str());
    std::exit(1);
  }
  report("dispatch", "forget_10k_ms", ms, "ms");
}

// -- tenants -----------------------------------------------------------------------

/// 100 todo tenants opened one after another (each its own LMDB store,
/// actor system, supervision tree and read model), and the heap one open,
/// idle tenant takes (in a child with one malloc arena, as w5), allocated
/// and resident.
void tenants(const std::string& dir) {
  {
    auto host = sourcery::application_host::start(todo::tenants_config("lmdb:" + dir + "/open"));
    if (!host) {
      std::fprintf(stderr, "tenants: %s\n", describe_error(host.error()).c_str());
      std::exit(1);
    }
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 100; ++i)
      if (!(*host)->open("t" + std::to_string(i))) {
        std::fprintf(stderr, "tenants: cannot open t%d\n", i);
        std::exit(1);
      }
    report("dispatch", "tenants_100_open_seconds", seconds_since(start), "s");
  }
  std::fflush(stdout);
  pid_t pid = ::fork();
  if (pid == 0) {
    mallopt(M_ARENA_MAX, 1);
    auto host = sourcery::application_host::start(todo::tenants_config("lmdb:" + dir + "/idle"));
    std::vector<std::shared_ptr<sourcery::tenant>> held;
    for (int i = 0; i < 5; ++i) // warm up
      held.push_back(*(*host)->open("w" + std::to_string(i)));
    std::this_thread::sleep_for(std::chrono::milliseconds{200});
    auto resident = [] { // bytes of this process in memory (/proc/self/statm)
      long pages = 0, rss = 0;
      if (FILE* f = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(f, "%ld %ld", &pages, &rss) != 2)
          rss = 0;
        std::fclose(f);
      }
      return static_cast<double>(rss) * static_cast<double>(::sysconf(_SC_PAGESIZE));
    };
    auto before = heap_in_use();
    auto rss_before = resident();
    constexpr int n = 40;
    for (int i = 0; i < n; ++i)
      held.push_back(*(*host)->open("i" + std::to_string(i)));
    std::this_thread::sleep_for(std::chrono::milliseconds{500}); // idle: started, caught up
    auto after = heap_in_use();
    // The heap counts what is allocated: LMDB reserves 3 MiB of page lists
    // per writable environment (two per tenant), mostly never touched.
    report("dispatch", "tenant_idle_bytes", static_cast<double>(after - before) / n, "bytes");
    report("dispatch", "tenant_idle_resident_bytes", (resident() - rss_before) / n, "bytes");
    std::fflush(stdout);
    std::_Exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
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
  if (!init_bench_store(*uri))
    return 1;
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
  if (wanted("w1") || wanted("w1_personal"))
    w1_memory(16, commands, wanted("w1_personal"));
  if (wanted("w1")) {
    auto app = start_app((root / "w1").string(), false);
    w1("w1_durable_256", *app, 256, commands);
  }
  if (wanted("forget"))
    forget_10k((root / "forget").string());
  if (wanted("tenants"))
    tenants((root / "tenants").string());
  if (wanted("w4"))
    w4((root / "w4").string());
  if (wanted("w5"))
    w5((root / "w5").string(), static_cast<int>(100'000 * opts.scale));
  fs::remove_all(root);
  return 0;
}

} // namespace sourcery::bench
