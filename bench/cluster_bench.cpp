// The cluster suite: bank W1 deposits over a 3-node cluster (this process
// and two forked node processes, on the same cores and PostgreSQL) against
// the same on one node; failover after an owner's SIGKILL and handoff after
// a clean leave, each measured until every aggregate of the node that went
// answers commands again on another node.
//
//   cluster_w1_3nodes, cluster_single_node (commands/s), cluster_w1_3nodes_p99 (µs),
//   cluster_w1_ratio (3 nodes / 1 node, each phase at least 10 s at --scale 1),
//   cluster_w1_3nodes_tls, cluster_w1_tls_ratio (the same 3 nodes with mutual
//   TLS between them, against plain links; the two alternate, two rounds each),
//   placement_max_over_mean (the busiest of 2-10 members against the mean),
//   node_freeze_others_max_latency_ms (one node frozen 8 s: the worst
//   latency on the other nodes' accounts), node_rejoin_seconds (from its
//   SIGCONT until it holds shards again), store_freeze_recovery_seconds
//   (PostgreSQL frozen 6 s under load -- SIGSTOP of its processes, so run
//   it as the server's owner or root: from SIGCONT until every account
//   answers), failover_seconds, handoff_seconds, cluster_commands_lost (commands)

#include <csignal>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <random>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <filesystem>
#include <optional>
#include <netinet/in.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "../tests/support/free_port.hpp"
#include "../tests/support/server_control.hpp"
#include "../tests/support/test_ca.hpp"
#include "bank_load.hpp"
#include "sourcery/persistence/postgres_coordination.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/runtime/cluster/node_registration.hpp"
#include "sourcery/runtime/cluster/placement.hpp"

namespace sourcery::bench {

namespace {

constexpr int accounts = 1000;
using sourcery::testing::free_port;


/// The cluster's TLS files (made once, before any fork), or none.
struct bench_tls {
  std::string dir;
  cluster::tls_settings for_node(int i) const {
    if (dir.empty())
      return {};
    auto who = "node" + std::to_string(i);
    return {dir + "/" + who + ".pem", dir + "/" + who + ".key", dir + "/bench-ca.pem"};
  }
};

application_config node_config(const std::string& uri, const std::string& node, cluster::tls_settings tls = {}) {
  application_config cfg;
  cfg.store_uri = uri;
  cluster::cluster_settings settings;
  settings.name = tls.enabled() ? "bench_tls" : "bench";
  settings.node = node;
  settings.tls = std::move(tls);
  cfg.registration = cluster::node_registration(settings);
  cfg.log.level = log_level::warn;
  return cfg;
}

/// A node in a process of its own, forked before this process starts any
/// thread; it takes line commands on a pipe and answers on another.
struct node_process {
  pid_t pid = -1;
  FILE* to = nullptr;
  FILE* from = nullptr;
  std::string address;

  bool alive = true; ///< false once it failed to join (and exited)

  void say(const std::string& line) {
    if (!alive)
      return; // its pipe has no reader: writing would raise SIGPIPE
    std::fprintf(to, "%s\n", line.c_str());
    std::fflush(to);
  }
  std::string hear() {
    std::string line;
    int c;
    while ((c = std::fgetc(from)) != EOF && c != '\n')
      line += static_cast<char>(c);
    return line;
  }
  /// Asks it to join; whether it did (then `address` is where it listens).
  bool join() {
    say("join");
    auto line = hear();
    if (line.rfind("ready ", 0) != 0) {
      alive = false; // it exits after saying why
      return false;
    }
    address = line.substr(6);
    return true;
  }
};

/// The child's side: "join" -> "ready ADDRESS"; "w1 N D" -> "done SECONDS LAT..."; "leave" -> exits.
[[noreturn]] void serve_node(const std::string& uri, const cluster::tls_settings& tls, FILE* in, FILE* out) {
  std::unique_ptr<application> app;
  char buf[256];
  while (std::fgets(buf, sizeof buf, in) != nullptr) {
    std::string cmd{buf};
    if (cmd.rfind("join", 0) == 0) {
      // Its port is chosen now, not when it was forked: a port free then
      // may have become another connection's since.
      std::string address;
      for (int attempt = 0; !app; ++attempt) {
        address = "127.0.0.1:" + std::to_string(free_port());
        auto started = application::start(node_config(uri, address, tls), bank::routes());
        if (started) {
          app = std::move(*started);
        } else if (attempt == 4 || describe_error(started.error()).find("cannot listen") == std::string::npos) {
          std::fprintf(stderr, "node %s: %s\n", address.c_str(), describe_error(started.error()).c_str());
          std::_Exit(1);
        }
      }
      std::fprintf(out, "ready %s\n", address.c_str());
    } else if (cmd.rfind("w1", 0) == 0) {
      int n = 0, d = 0;
      std::sscanf(buf, "w1 %d %d", &n, &d);
      std::vector<double> lat;
      std::mt19937 rng{static_cast<unsigned>(::getpid())};
      auto start = std::chrono::steady_clock::now();
      closed_loop(*app, d, n, [&](int) { return deposit{std::to_string(rng() % accounts), 1}; }, lat);
      std::fprintf(out, "done %.6f", seconds_since(start));
      for (auto l : lat)
        std::fprintf(out, " %.1f", l);
      std::fprintf(out, "\n");
    } else if (cmd.rfind("leave", 0) == 0) {
      app->stop();
      app.reset();
      std::_Exit(0);
    }
    std::fflush(out);
  }
  std::_Exit(0);
}

node_process fork_node(const std::string& uri, const cluster::tls_settings& tls = {}) {
  int down[2], up[2];
  if (::pipe(down) != 0 || ::pipe(up) != 0)
    std::exit(1);
  node_process n;
  n.pid = ::fork();
  if (n.pid == 0) {
    ::close(down[1]);
    ::close(up[0]);
    serve_node(uri, tls, ::fdopen(down[0], "r"), ::fdopen(up[1], "w"));
  }
  ::close(down[0]);
  ::close(up[1]);
  n.to = ::fdopen(down[1], "w");
  n.from = ::fdopen(up[0], "r");
  return n;
}

/// The node owning `account` now, as the lease table says.
std::string owner_of_account(persistence::postgres_coordination& c, int account) {
  auto shard = cluster::shard_of("account-" + std::to_string(account), 64);
  auto leases = c.leases("bench");
  if (leases)
    for (auto& l : *leases)
      if (l.name == cluster::shard_lease(shard) && l.left.count() > 0)
        return persistence::node_of_owner(l.owner);
  return {};
}

/// Deposits to each of `probes` from `app` until every one is accepted (60 s
/// at most: a cluster that never serves them again is reported, not waited
/// for); returns the seconds since `since`, and counts the acknowledged ones.
double until_served(application& app, const std::vector<int>& probes, std::chrono::steady_clock::time_point since,
                    std::map<int, int>& acked) {
  for (auto a : probes) {
    while (seconds_since(since) < 60) {
      dispatch_options o;
      o.timeout = std::chrono::seconds{10};
      auto r = app.dispatch(deposit{std::to_string(a), 1}, o);
      if (r && r->accepted) {
        ++acked[a];
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{10}); // refused at once while the node rejoins
    }
  }
  if (seconds_since(since) >= 60)
    std::fprintf(stderr, "sourcery-bench: the aggregates of the node that went were not served again within 60 s\n");
  return seconds_since(since);
}

/// The cluster tables of `uri`'s store, or null (the error said).
std::unique_ptr<persistence::postgres_coordination> open_coordination(const persistence::store_uri& uri) {
  persistence::coordination_options co;
  co.conninfo = uri.location;
  co.schema = uri.schema;
  auto coordination = persistence::postgres_coordination::open(co);
  if (!coordination) {
    std::fprintf(stderr, "sourcery-bench: %s\n", describe_error(coordination.error()).c_str());
    return nullptr;
  }
  return std::move(*coordination);
}

/// Waits (10 s at most) until every shard of `cluster` is held by the node
/// placement gives it to among `members`: no move under way, so that a
/// phase measures serving, not rebalancing. Whether it settled.
bool wait_settled(persistence::postgres_coordination& coordination, const std::string& cluster,
                  const std::vector<std::string>& members) {
  auto placement = cluster::place_shards(members, 64);
  auto settled = [&] {
    auto leases = coordination.leases(cluster);
    if (!leases)
      return false;
    size_t placed = 0;
    for (auto& l : *leases)
      if (l.name.rfind("shard:", 0) == 0 && l.left.count() > 0
          && persistence::node_of_owner(l.owner) == placement[std::stoul(l.name.substr(6)) % placement.size()])
        ++placed;
    return placed == 64;
  };
  for (int i = 0; i < 1000; ++i) {
    if (settled())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  std::fprintf(stderr, "sourcery-bench: cluster %s did not settle within 10 s\n", cluster.c_str());
  return false;
}

} // namespace

/// W1 on three nodes, `app` here and `b`, `c` forked: each dispatches a
/// third, to accounts anywhere in the cluster. Commands/s; `lat` gets
/// every node's latencies (µs).
double w1_on_three(application& app, node_process& b, node_process& c, int commands, std::vector<double>& lat) {
  int share = commands / 3;
  auto cmd = "w1 " + std::to_string(share) + " 85";
  b.say(cmd);
  c.say(cmd);
  std::mt19937 rng{2};
  auto start = std::chrono::steady_clock::now();
  closed_loop(app, 86, share, [&](int) { return deposit{std::to_string(rng() % accounts), 1}; }, lat);
  double longest = seconds_since(start);
  for (auto* n : {&b, &c}) {
    std::istringstream in{n->hear()};
    std::string word;
    double secs = 0;
    in >> word >> secs;
    longest = std::max(longest, secs);
    double l;
    while (in >> l)
      lat.push_back(l);
  }
  return 3.0 * share / longest;
}

/// Waits (60 s at most) until the bank's handlers have handled every event
/// stored (wherever in the cluster they run): the phase that follows then
/// measures its own work, not this cluster catching up.
void caught_up(application& app) {
  auto head = app.store().head_position();
  for (auto* name : {"bank.balances", "bank.transfers"})
    if (auto h = app.handler(name))
      for (int i = 0; i < 6000 && h->position() < head; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds{10});
}

/// A cluster of this process and two forked nodes with mutual TLS, its
/// accounts open and its shards settled; `app` is null if it did not start.
struct tls_cluster {
  node_process& b;
  node_process& c;
  std::unique_ptr<application> app;

  tls_cluster(node_process& b_, node_process& c_, const persistence::store_uri& uri, const cluster::tls_settings& tls)
    : b(b_), c(c_) {
    if (!b.join() || !c.join()) {
      std::fprintf(stderr, "sourcery-bench: a TLS node did not start\n");
      return;
    }
    auto a = application::start(node_config(uri.text(), "127.0.0.1:" + std::to_string(free_port()), tls),
                                bank::routes());
    if (!a) {
      std::fprintf(stderr, "sourcery-bench: %s\n", describe_error(a.error()).c_str());
      return;
    }
    app = std::move(*a);
    // As the plain phase: measured once every shard is where placement puts it.
    if (auto coordination = open_coordination(uri))
      wait_settled(*coordination, "bench_tls", {app->placement().node, b.address, c.address});
    open_accounts(*app, accounts);
  }

  /// The nodes leave.
  ~tls_cluster() {
    b.say("leave");
    c.say("leave");
    ::waitpid(b.pid, nullptr, 0);
    ::waitpid(c.pid, nullptr, 0);
    if (app)
      app->stop();
  }
};

int run_cluster_suite(const options& opts) {
  auto uri = persistence::store_uri::parse(opts.store);
  if (!uri || !uri->is_postgres()) {
    std::fprintf(stderr, "sourcery-bench: the cluster suite needs --store postgresql://...\n");
    return 2;
  }
  // At --scale 1 each W1 phase runs 10 s or more on these 2 cores.
  const int commands = static_cast<int>(480'000 * opts.scale);
  const std::string base = "bench_cluster_" + std::to_string(::getpid());
  auto single_uri = *uri;
  single_uri.schema = base + "_single";
  auto cluster_uri = *uri;
  cluster_uri.schema = base;
  // The other nodes first: forked before this process has any thread.
  auto b = fork_node(cluster_uri.text());
  auto c = fork_node(cluster_uri.text());
  // And a second cluster of three with mutual TLS between the nodes
  // (certificates of a throwaway CA, made by openssl), for the cost of TLS.
  bench_tls tls;
  auto tls_uri = *uri;
  tls_uri.schema = base + "_tls";
  std::optional<node_process> tls_b, tls_c;
  if (wanted("w1")) {
    tls.dir = "/tmp/" + base + "_tls";
    std::filesystem::create_directories(tls.dir);
    sourcery::testing::test_ca ca{tls.dir, "bench"};
    for (int i = 0; i < 3; ++i)
      ca.issue("node" + std::to_string(i));
    tls_b = fork_node(tls_uri.text(), tls.for_node(1));
    tls_c = fork_node(tls_uri.text(), tls.for_node(2));
  }

  // Each phase's store, made as an operator would with `sourcery init`.
  for (auto* u : {&single_uri, &cluster_uri, &tls_uri})
    if (!init_bench_store(*u))
      return 1;

  if (wanted("placement")) {
    double worst = 0;
    for (size_t n = 2; n <= 10; ++n) {
      std::vector<std::string> members;
      for (size_t i = 0; i < n; ++i)
        members.push_back("127.0.0.1:" + std::to_string(7101 + i));
      std::map<std::string, int> load;
      for (auto& o : cluster::place_shards(members, 64))
        ++load[o];
      int busiest = 0;
      for (auto& [m, k] : load)
        busiest = std::max(busiest, k);
      worst = std::max(worst, busiest / (64.0 / static_cast<double>(n)));
    }
    report("cluster", "placement_max_over_mean", worst, "ratio");
  }

  double single_rate = 0;
  if (wanted("w1")) { // the baseline: one node on the same PostgreSQL
    application_config cfg;
    cfg.store_uri = single_uri.text();
    cfg.log.level = log_level::warn;
    auto app = application::start(cfg, bank::routes());
    if (!app) {
      std::fprintf(stderr, "sourcery-bench: %s\n", describe_error(app.error()).c_str());
      return 1;
    }
    open_accounts(**app, accounts);
    std::vector<double> lat;
    std::mt19937 rng{1};
    double rate = closed_loop(**app, 256, commands, [&](int) { return deposit{std::to_string(rng() % accounts), 1}; }, lat);
    single_rate = rate;
    report("cluster", "cluster_single_node", rate, "commands/s");
  }

  if (!b.join() || !c.join()) {
    std::fprintf(stderr, "sourcery-bench: a node did not start\n");
    return 1;
  }
  auto a = application::start(node_config(cluster_uri.text(), "127.0.0.1:" + std::to_string(free_port())),
                              bank::routes());
  if (!a) {
    std::fprintf(stderr, "sourcery-bench: %s\n", describe_error(a.error()).c_str());
    return 1;
  }
  auto& app = **a;
  auto coordination = open_coordination(cluster_uri);
  if (!coordination)
    return 1;
  // Measured once the cluster has settled: every shard held by the node
  // placement gives it to (no move under way).
  wait_settled(*coordination, "bench", {app.placement().node, b.address, c.address});
  open_accounts(app, accounts);

  if (wanted("w1")) {
    // Plain and mutual TLS alternate, a quarter of the commands in each of
    // four rounds (while one cluster works, the other idles): a drift of the
    // machine or of PostgreSQL (a checkpoint) falls on both. Two rounds of
    // half swung the ratio between 0.75 and 1.
    constexpr int rounds = 4;
    std::vector<double> lat, tls_lat;
    std::optional<tls_cluster> secure;
    secure.emplace(*tls_b, *tls_c, tls_uri, tls.for_node(0));
    if (!secure->app)
      secure.reset();
    const int round = commands / rounds;
    double plain_seconds = 0, tls_seconds = 0;
    for (int r = 0; r < rounds; ++r) {
      plain_seconds += (round / 3 * 3) / w1_on_three(app, b, c, round, lat);
      caught_up(app);
      if (secure) {
        tls_seconds += (round / 3 * 3) / w1_on_three(*secure->app, secure->b, secure->c, round, tls_lat);
        caught_up(*secure->app);
      }
    }
    secure.reset();
    double plain_rate = rounds * (round / 3 * 3) / plain_seconds;
    report("cluster", "cluster_w1_3nodes", plain_rate, "commands/s");
    report("cluster", "cluster_w1_3nodes_p99", percentile(lat, 0.99), "us");
    if (single_rate > 0)
      report("cluster", "cluster_w1_ratio", plain_rate / single_rate, "ratio");
    if (tls_seconds > 0) {
      double tls_rate = rounds * (round / 3 * 3) / tls_seconds;
      report("cluster", "cluster_w1_3nodes_tls", tls_rate, "commands/s");
      report("cluster", "cluster_w1_tls_ratio", tls_rate / plain_rate, "ratio");
    }
    std::filesystem::remove_all(tls.dir);
  }

  auto probes_on = [&](const std::string& node) {
    std::vector<int> out;
    for (int i = 0; i < accounts && out.size() < 50; ++i)
      if (owner_of_account(*coordination, i) == node)
        out.push_back(i);
    return out;
  };
  auto version_of = [&](int account) -> uint64_t {
    auto info = app.store().stream_info("account-" + std::to_string(account));
    return info ? info->version : 0;
  };
  // Probes `node`'s accounts after `go` until each answers; counts the
  // acknowledged deposits that are not stored.
  int lost = 0;
  auto measure = [&](const std::string& node, const std::function<void()>& go) {
    auto probes = probes_on(node);
    std::map<int, uint64_t> before;
    for (auto p : probes)
      before[p] = version_of(p);
    std::map<int, int> acked;
    auto t0 = std::chrono::steady_clock::now();
    go();
    auto took = until_served(app, probes, t0, acked);
    for (auto& [account, n] : acked)
      if (auto now = version_of(account); now < before[account] + static_cast<uint64_t>(n))
        lost += static_cast<int>(before[account] + static_cast<uint64_t>(n) - now);
    return took;
  };
  // Deposits from this node to `probes` until `stop`, one at a time: the
  // worst latency and the failures.
  auto watch = [&](const std::vector<int>& probes, std::atomic<bool>& stop, double& worst_ms, int& failures) {
    std::mt19937 rng{3};
    while (!stop.load()) {
      auto t0 = std::chrono::steady_clock::now();
      dispatch_options o;
      o.timeout = std::chrono::seconds{5};
      auto r = app.dispatch(deposit{std::to_string(probes[rng() % probes.size()]), 1}, o);
      failures += !(r && r->accepted);
      worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  };
  if (wanted("freeze")) {
    // Node b frozen 8 s: what the accounts of the other two see, and how
    // soon b serves again once it wakes.
    std::vector<int> others;
    for (int i = 0; i < accounts && others.size() < 50; ++i)
      if (auto o = owner_of_account(*coordination, i); !o.empty() && o != b.address)
        others.push_back(i);
    std::atomic<bool> stop{false};
    double worst_ms = 0;
    int failures = 0;
    std::thread watcher{[&] { watch(others, stop, worst_ms, failures); }};
    ::kill(b.pid, SIGSTOP);
    std::this_thread::sleep_for(std::chrono::seconds{8});
    stop = true;
    watcher.join();
    report("cluster", "node_freeze_others_max_latency_ms", worst_ms, "ms");
    report("cluster", "node_freeze_others_failures", failures, "commands");
    auto woke = std::chrono::steady_clock::now();
    ::kill(b.pid, SIGCONT);
    auto holds = [&] {
      auto leases = coordination->leases("bench");
      if (leases)
        for (auto& l : *leases)
          if (l.name.rfind("shard:", 0) == 0 && l.left.count() > 0 && persistence::node_of_owner(l.owner) == b.address)
            return true;
      return false;
    };
    while (!holds() && seconds_since(woke) < 60)
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    report("cluster", "node_rejoin_seconds", seconds_since(woke), "s");
  }
  if (wanted("store_freeze")) {
    // PostgreSQL frozen 6 s under load: from SIGCONT until every probed
    // account (on every node) answers again.
    sourcery::testing::server_control server{uri->location};
    std::vector<int> probes;
    for (int i = 0; i < accounts; i += accounts / 50)
      probes.push_back(i);
    std::atomic<bool> stop{false};
    double worst_ms = 0;
    int failures = 0;
    std::thread load{[&] { watch(probes, stop, worst_ms, failures); }};
    if (server.can_signal()) {
      server.freeze();
      std::this_thread::sleep_for(std::chrono::seconds{6});
      server.thaw();
      auto thawed = std::chrono::steady_clock::now();
      stop = true;
      load.join();
      std::map<int, int> acked;
      report("cluster", "store_freeze_recovery_seconds", until_served(app, probes, thawed, acked), "s");
    } else {
      stop = true;
      load.join();
      std::fprintf(stderr, "sourcery-bench: cannot freeze the PostgreSQL server (run on its machine as its owner or"
                           " root); store_freeze_recovery_seconds not measured\n");
    }
  }
  if (wanted("failover"))
    report("cluster", "failover_seconds", measure(b.address, [&] {
             ::kill(b.pid, SIGKILL);
             ::waitpid(b.pid, nullptr, 0);
           }), "s");
  if (wanted("handoff"))
    report("cluster", "handoff_seconds", measure(c.address, [&] { c.say("leave"); }), "s"); // hands over first
  if (wanted("failover") || wanted("handoff"))
    report("cluster", "cluster_commands_lost", lost, "commands");
  app.stop();
  if (!wanted("failover")) {
    b.say("leave");
    ::waitpid(b.pid, nullptr, 0);
  }
  if (!wanted("handoff"))
    c.say("leave");
  ::waitpid(c.pid, nullptr, 0);
  PGconn* pg = PQconnectdb(uri->location.c_str());
  PQsetNoticeProcessor(pg, [](void*, const char*) {}, nullptr);
  for (auto& s : {base, base + "_single"})
    PQclear(PQexec(pg, ("DROP SCHEMA IF EXISTS \"" + s + "\" CASCADE").c_str()));
  PQfinish(pg);
  return 0;
}

} // namespace sourcery::bench
