#pragma once

// A chaos run: three bank-node processes as one cluster on a PostgreSQL
// server, clients depositing and transferring through all of them, and
// random faults one at a time with gaps between them -- a node killed with
// SIGKILL (then started again), a node frozen (SIGSTOP), the server frozen,
// the server crashed and restarted (pg_ctl restart -m immediate), the
// store's sessions ended (pg_terminate_backend), a node's links cut both
// ways or one way (network namespaces: needs root, ip and iptables).
//
// What it measures, fault by fault: how soon every node serves every
// account after the fault heals, and the share of deposits answered OK for
// accounts whose owner was not the faulted node. What it checks at the end:
// every acknowledged deposit stored exactly once, contiguous stream
// versions, money conserved across transfers, the projection's checkpoint
// never moving back and agreeing with the accounts, no node exiting, and
// no `deadlock detected` in the server's log (when the log can be read).
//
// Used by the 60 s chaos test (tests/examples/chaos_test.cpp) and by
// `sourcery-bench chaos --store URI --seconds N`. Faults on the server need
// it on this machine, run as its owner or root; those it cannot cause are
// left out and said so. CHAOS_DEBUG=1 in the environment prints every
// failed request, and when each fault begins and heals, on stderr;
// CHAOS_ONLY=KIND,... causes only those kinds of fault; CHAOS_PAUSE=S makes
// every freeze and cut last S seconds.

#include <sys/stat.h>
#include <unistd.h>

#include <pwd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

#include "bank_ledger.hpp"
#include "child_process.hpp"
#include "eventually.hpp"
#include "free_port.hpp"
#include "http_client.hpp"
#include "late_commits.hpp"
#include "netns_lab.hpp"
#include "process_tree.hpp"
#include "server_control.hpp"
#include "sourcery/persistence/postgres_projection_store.hpp"
#include "sourcery/runtime/cluster/placement.hpp"

namespace sourcery::testing {

struct chaos_settings {
  std::string server;    ///< the PostgreSQL server's URI (libpq), without a schema
  std::string schema;    ///< the store's schema (created by the nodes, dropped by nobody)
  std::string bank_node; ///< path of the bank-node program
  std::string work_dir;  ///< where the nodes' logs go
  std::chrono::seconds duration{60};
  unsigned seed = 1;
  bool link_faults = true; ///< cut links through network namespaces (root, ip, iptables, a unix-socket server)
  /// CPU and disk pressure for the whole run, as on a machine busy compiling:
  /// a busy loop per core and a thread writing and fsyncing a file in work_dir.
  bool pressure = false;
  std::function<void(const std::string&)> say = [](const std::string&) {};
};

/// One fault, as it went.
struct chaos_fault {
  std::string what;             ///< e.g. "node_freeze node=1 seconds=5.0"
  double recovery_seconds = -1; ///< from its heal until every node served every account; -1: never
  int unfaulted_ok = 0, unfaulted_total = 0;
};

struct chaos_report {
  std::vector<chaos_fault> faults;
  std::vector<std::string> left_out; ///< fault kinds this run could not cause, and why
  int unfaulted_ok = 0, unfaulted_total = 0;
  double worst_recovery_seconds = 0;
  size_t acknowledged = 0;
  int lost = 0, duplicated = 0, version_gaps = 0;
  int64_t money_deposited = 0, money_held = 0;
  bool projection_agrees = false;
  int checkpoint_backwards = 0, checkpoint_seen = 0;
  int node_exits = 0; ///< nodes that exited on their own
  int deadlocks = -1; ///< "deadlock detected" lines in the server's log; -1: log not readable
  /// Fenced batches checked against their writer's shard leases (late_commits.hpp), -1: not checked;
  /// those written on a shard that later changed hands; those committed after it did.
  int batches_checked = -1, batches_handed_over = 0;
  std::vector<std::string> late_commits;
  std::vector<std::string> problems;

  double unfaulted_ok_share() const {
    return unfaulted_total == 0 ? 1.0 : static_cast<double>(unfaulted_ok) / unfaulted_total;
  }
  /// Safety and liveness as the issue asks: ≥ 99 % OK on unfaulted shards,
  /// full service ≤ 5 s after each heal, nothing lost or doubled.
  bool passed() const {
    return problems.empty() && lost == 0 && duplicated == 0 && version_gaps == 0 && money_deposited == money_held
           && projection_agrees && checkpoint_backwards == 0 && checkpoint_seen > 0 && node_exits == 0
           && deadlocks <= 0 && late_commits.empty() && unfaulted_ok_share() >= 0.99 && worst_recovery_seconds >= 0
           && worst_recovery_seconds <= 5.0 && !faults.empty();
  }
};

namespace detail {

/// True when every host of the URI is a unix-socket directory: nodes in
/// network namespaces still reach it when their links are cut.
inline bool over_unix_sockets(const std::string& uri) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(uri.c_str(), &err);
  if (!opts) {
    PQfreemem(err);
    return false;
  }
  bool unix_only = true;
  for (auto* o = opts; o->keyword; ++o)
    if (std::string{o->keyword} == "host")
      unix_only = o->val && o->val[0] == '/';
  PQconninfoFree(opts);
  return unix_only;
}

} // namespace detail

class bank_chaos {
public:
  static constexpr int accounts = 12;
  static constexpr size_t node_count = 3;

  explicit bank_chaos(chaos_settings s) : s_(std::move(s)), server_(s_.server), rng_(s_.seed) {
    uri_ = init_test_store(s_.server + "&schema=" + s_.schema);
    deadlocks_before_ = server_.log_count("deadlock detected");
  }
  ~bank_chaos() {
    stop_load();
    stop_pressure();
    watching_ = false;
    if (watcher_.joinable())
      watcher_.join();
    if (server_.can_signal())
      server_.thaw();
    if (lab_)
      for (size_t i = 0; i < node_count; ++i)
        lab_->heal(i);
    for (auto& n : nodes_)
      n.process.reset();
  }

  chaos_report run() {
    using namespace std::chrono_literals;
    std::vector<std::string> kinds{"node_kill", "node_freeze", "sessions_terminated"};
    if (server_.can_signal())
      kinds.push_back("store_freeze");
    else
      report_.left_out.push_back("store_freeze: " + server_.why_not());
    if (server_.can_restart())
      kinds.push_back("store_restart");
    else
      report_.left_out.push_back("store_restart: " + (server_.can_signal() ? "pg_ctl not found" : server_.why_not()));
    if (s_.link_faults) {
      if (!detail::over_unix_sockets(s_.server)) {
        report_.left_out.push_back("link cuts: the server is reached over TCP, which a cut would cut too");
      } else {
        try {
          lab_ = std::make_unique<netns_lab>(node_count);
          kinds.push_back("link_cut_both");
          kinds.push_back("link_cut_one_way");
        } catch (const std::exception& e) {
          report_.left_out.push_back(std::string{"link cuts: "} + e.what());
        }
      }
    }
    try {
      install_lease_log(s_.server, s_.schema);
      lease_log_ = true;
    } catch (const std::exception& e) {
      report_.left_out.push_back(std::string{"the late-commit check: "} + e.what());
    }
    if (const char* only = std::getenv("CHAOS_ONLY")) // for a closer look: CHAOS_ONLY=node_freeze,store_freeze
      kinds.erase(std::remove_if(kinds.begin(), kinds.end(),
                                 [&](const std::string& k) { return std::string{only}.find(k) == std::string::npos; }),
                  kinds.end());
    for (auto& l : report_.left_out)
      s_.say("left out: " + l);
    for (size_t i = 0; i < node_count; ++i)
      if (!start(i)) {
        report_.problems.push_back("node " + std::to_string(i) + " did not start");
        return report_;
      }
    if (!open_accounts())
      return report_;
    if (s_.pressure)
      start_pressure();
    watch_checkpoints();
    start_load();
    if (!load_acknowledged(50))
      return report_;
    auto began = std::chrono::steady_clock::now();
    std::shuffle(kinds.begin(), kinds.end(), rng_);
    for (size_t k = 0; std::chrono::steady_clock::now() - began < s_.duration; ++k) {
      inject(kinds[k % kinds.size()]);
      if (!report_.problems.empty())
        break;
      std::this_thread::sleep_for(1s); // a gap between faults
    }
    finish();
    return report_;
  }

private:
  struct node {
    uint16_t http = 0, peer = 0;
    std::unique_ptr<child_process> process;
    std::atomic<bool> usable{false}; ///< the load may send here
    int starts = 0;
  };

  std::string host(size_t i) const { return lab_ ? lab_->address(i) : "127.0.0.1"; }
  std::string address(size_t i) const { return host(i) + ":" + std::to_string(nodes_[i].peer); }

  bool start(size_t i) {
    auto& n = nodes_[i];
    if (n.http == 0) {
      n.http = free_port();
      n.peer = free_port();
    }
    std::vector<std::string> args{"--store", uri_, "--cluster", "chaos", "--node", address(i),
                                  "--http", std::to_string(n.http), "--address", host(i)};
    std::string program = s_.bank_node;
    if (lab_) { // on its own host: `ip netns exec NS bank-node ...`
      args.push_back("--insecure-links"); // plain links off loopback (the lab's own veths)
      auto prefixed = lab_->exec_prefix(i);
      prefixed.push_back(program);
      prefixed.insert(prefixed.end(), args.begin(), args.end());
      args = std::move(prefixed);
      program = netns_lab::ip_program();
    }
    auto log = s_.work_dir + "/node" + std::to_string(i) + "." + std::to_string(n.starts++) + ".log";
    n.process = std::make_unique<child_process>(program, args, log);
    auto line = n.process->read_line();
    if (line.find("listening") == std::string::npos) {
      // What it said, for the report: the work directory goes with the test.
      std::stringstream said;
      said << std::ifstream{log}.rdbuf();
      auto text = said.str();
      report_.problems.push_back("node " + std::to_string(i) + " printed \"" + line + "\" instead of listening; its log"
                                 + " ends: " + text.substr(text.size() > 2000 ? text.size() - 2000 : 0));
      return false;
    }
    return healthy_within(i, std::chrono::seconds{15});
  }

  /// Waits until node `i`'s /health says it serves (200), as a load
  /// balancer's health check would, then lets the load send there again.
  bool healthy_within(size_t i, std::chrono::seconds limit) {
    test::http_client c{nodes_[i].http, host(i)};
    c.set_timeout(std::chrono::seconds{2});
    bool healthy = eventually(
      [&] {
        try {
          return c.get("/health").status == 200;
        } catch (const std::exception&) {
          c.reconnect();
          return false;
        }
      },
      limit);
    nodes_[i].usable = healthy;
    return healthy;
  }

  // -- pressure -------------------------------------------------------------------

  std::atomic<bool> pressing_{false};
  std::vector<std::thread> pressure_;

  void start_pressure() {
    pressing_ = true;
    for (unsigned i = 0; i < std::max(1u, std::thread::hardware_concurrency()); ++i)
      pressure_.emplace_back([this] {
        volatile uint64_t x = 0;
        while (pressing_.load(std::memory_order_relaxed))
          for (int k = 0; k < 100000; ++k)
            x = x + static_cast<uint64_t>(k);
      });
    pressure_.emplace_back([this] {
      auto path = s_.work_dir + "/pressure.bin";
      std::vector<char> block(1 << 20, 'x');
      while (pressing_.load()) {
        if (FILE* f = std::fopen(path.c_str(), "w")) {
          for (int i = 0; i < 16 && pressing_.load(); ++i) {
            std::fwrite(block.data(), 1, block.size(), f);
            std::fflush(f);
            ::fsync(::fileno(f));
          }
          std::fclose(f);
        }
      }
      std::remove(path.c_str());
    });
  }
  void stop_pressure() {
    pressing_ = false;
    for (auto& t : pressure_)
      t.join();
    pressure_.clear();
  }

  // -- the load -----------------------------------------------------------------

  std::atomic<bool> loading_{false};
  std::vector<std::thread> load_threads_;
  std::mutex ledger_mtx_;
  std::set<std::string> acked_;
  // The fault under way: accounts whose owner it does not touch, and what
  // their commands came to.
  std::mutex window_mtx_;
  std::set<std::string> unfaulted_;
  int window_ok_ = 0, window_total_ = 0;

  void start_load(int threads = 2) {
    loading_ = true;
    for (int t = 0; t < threads; ++t)
      load_threads_.emplace_back([this, t] {
        std::mt19937 rng(s_.seed * 31u + static_cast<unsigned>(t));
        std::map<size_t, std::unique_ptr<test::http_client>> clients;
        for (int seq = 0; loading_.load(); ++seq) {
          std::vector<size_t> live;
          for (size_t i = 0; i < node_count; ++i)
            if (nodes_[i].usable.load())
              live.push_back(i);
          if (live.empty()) {
            std::this_thread::sleep_for(std::chrono::milliseconds{5});
            continue;
          }
          auto at = live[rng() % live.size()];
          auto& c = clients[at];
          if (!c) {
            c = std::make_unique<test::http_client>(nodes_[at].http, host(at));
            c->set_timeout(std::chrono::seconds{8});
          }
          auto from = "a" + std::to_string(rng() % accounts);
          bool ok = false;
          try {
            if (seq % 10 == 9) {
              auto to = "a" + std::to_string(rng() % accounts);
              if (to == from)
                continue;
              auto r = c->post("/transfers", {{"transfer", "t" + std::to_string(t) + "-" + std::to_string(seq)},
                                              {"from", from}, {"to", to}, {"amount", 1}});
              ok = r.status == 201 || r.status == 422; // started, or refused for what it asks (funds)
            } else {
              auto id = "d" + std::to_string(t) + "-" + std::to_string(seq);
              auto r = c->post("/accounts/" + from + "/deposits", {{"amount", 1}, {"transfer", id}});
              ok = r.status == 200;
              if (!ok && std::getenv("CHAOS_DEBUG"))
                std::fprintf(stderr, "debug %ld: %s via %zu: %u %s\n", (long)time(nullptr), from.c_str(), at, r.status, r.body.c_str());
              if (ok) {
                std::lock_guard guard{ledger_mtx_};
                acked_.insert(id);
              }
            }
          } catch (const std::exception& e) {
            if (std::getenv("CHAOS_DEBUG"))
              std::fprintf(stderr, "debug: %s via %zu: %s\n", from.c_str(), at, e.what());
            c.reset(); // the node went with the request: unknown outcome
          }
          if (seq % 10 != 9 && nodes_[at].usable.load()) { // a deposit, sent to a node the fault does not touch
            std::lock_guard guard{window_mtx_};
            if (unfaulted_.count(from)) {
              ++window_total_;
              window_ok_ += ok;
            }
          }
          if (!ok)
            std::this_thread::sleep_for(std::chrono::milliseconds{20}); // as a client would
        }
      });
  }

  void stop_load() {
    loading_ = false;
    for (auto& t : load_threads_)
      t.join();
    load_threads_.clear();
  }

  bool load_acknowledged(size_t n) {
    size_t from;
    {
      std::lock_guard guard{ledger_mtx_};
      from = acked_.size();
    }
    if (eventually(
          [&] {
            std::lock_guard guard{ledger_mtx_};
            return acked_.size() >= from + n;
          },
          std::chrono::seconds{30}))
      return true;
    report_.problems.push_back("the load got no " + std::to_string(n) + " deposits acknowledged in 30 s");
    return false;
  }

  /// Opens the accounts and seeds each with 1000, through node 0
  /// (open_bank_accounts: 503 and 504 tried again for 30 s).
  bool open_accounts() {
    auto problem = open_bank_accounts(host(0), nodes_[0].http, accounts, std::chrono::seconds{30},
                                      [this](const std::string& id) {
                                        std::lock_guard guard{ledger_mtx_};
                                        acked_.insert(id);
                                      });
    if (problem.empty())
      return true;
    report_.problems.push_back(problem);
    return false;
  }

  // -- ownership and service ----------------------------------------------------

  /// The node (index) holding each account's shard lease now, or -1: one
  /// query for all of them.
  std::vector<int> account_owners() {
    std::vector<int> out(accounts, -1);
    std::vector<std::vector<std::string>> held;
    try {
      pg_session pg{s_.server};
      held = pg.rows("SELECT name, owner FROM " + s_.schema
                     + ".cluster_leases WHERE name LIKE 'shard:%' AND expires_at > now()");
    } catch (const std::exception&) {
      return out; // nobody known: no account counts as unfaulted
    }
    std::map<std::string, int> node_of_lease;
    for (auto& row : held)
      for (size_t i = 0; i < node_count; ++i)
        if (row[1].rfind(address(i) + "#", 0) == 0)
          node_of_lease[row[0]] = static_cast<int>(i);
    for (int a = 0; a < accounts; ++a)
      if (auto it = node_of_lease.find(cluster::shard_lease(cluster::shard_of("account-a" + std::to_string(a), 64)));
          it != node_of_lease.end())
        out[static_cast<size_t>(a)] = it->second;
    return out;
  }

  /// Seconds until every account answers a deposit through node `i` (each
  /// request within 5 s), or -1 when not within `limit`.
  double serves_all_within(size_t i, std::chrono::seconds limit) {
    auto t0 = std::chrono::steady_clock::now();
    auto prefix = "dw" + std::to_string(i) + "-r" + std::to_string(probe_round_) + "-";
    int a = deposit_to_every_account(host(i), nodes_[i].http, accounts, limit, std::chrono::seconds{5}, prefix,
                                     [this](const std::string& id) {
                                       std::lock_guard guard{ledger_mtx_};
                                       acked_.insert(id);
                                     });
    if (a < accounts)
      return -1;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  /// Seconds from `since` until every usable node served every account
  /// (checked on all at once), or -1.
  double all_serve_after(std::chrono::steady_clock::time_point since) {
    ++probe_round_;
    std::vector<std::thread> checks;
    std::vector<double> took(node_count, 0);
    for (size_t i = 0; i < node_count; ++i)
      if (nodes_[i].usable.load())
        checks.emplace_back([&, i] { took[i] = serves_all_within(i, std::chrono::seconds{15}); });
    for (auto& t : checks)
      t.join();
    if (std::any_of(took.begin(), took.end(), [](double t) { return t < 0; }))
      return -1;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
  }

  // -- faults -------------------------------------------------------------------

  /// Opens the window of a fault touching `faulted` (-1: the store, every account).
  void open_window(int faulted) {
    std::set<std::string> keep;
    if (faulted >= 0) {
      auto owners = account_owners();
      for (int a = 0; a < accounts; ++a)
        if (auto o = owners[static_cast<size_t>(a)]; o >= 0 && o != faulted)
          keep.insert("a" + std::to_string(a));
    }
    std::lock_guard guard{window_mtx_};
    unfaulted_ = std::move(keep);
    window_ok_ = window_total_ = 0;
  }
  void close_window(chaos_fault& f) {
    std::lock_guard guard{window_mtx_};
    f.unfaulted_ok = window_ok_;
    f.unfaulted_total = window_total_;
    report_.unfaulted_ok += window_ok_;
    report_.unfaulted_total += window_total_;
    unfaulted_.clear();
  }

  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>{lo, hi}(rng_); }

  void inject(const std::string& kind) {
    using namespace std::chrono;
    chaos_fault f;
    auto victim = static_cast<int>(rng_() % node_count);
    auto pause = duration_cast<milliseconds>(duration<double>{uniform(2.0, 8.0)});
    if (const char* fixed = std::getenv("CHAOS_PAUSE")) // seconds, for a closer look (CHAOS_PAUSE=8)
      pause = duration_cast<milliseconds>(duration<double>{std::atof(fixed)});
    std::ostringstream what;
    what << kind;
    bool node_fault = kind.rfind("node_", 0) == 0 || kind.rfind("link_", 0) == 0;
    if (node_fault)
      what << " node=" << victim;
    open_window(node_fault ? victim : -1);
    if (std::getenv("CHAOS_DEBUG"))
      std::fprintf(stderr, "debug %ld: %s begins\n", (long)time(nullptr), what.str().c_str());
    steady_clock::time_point healed;
    if (kind == "node_kill") {
      nodes_[victim].usable = false;
      nodes_[victim].process->signal(SIGKILL);
      nodes_[victim].process->wait();
      std::this_thread::sleep_for(pause);
      healed = steady_clock::now();
      if (!start(static_cast<size_t>(victim)))
        report_.problems.push_back("node " + std::to_string(victim) + " did not start again after SIGKILL");
    } else if (kind == "node_freeze") {
      nodes_[victim].usable = false;
      nodes_[victim].process->signal(SIGSTOP);
      std::this_thread::sleep_for(pause);
      healed = steady_clock::now();
      nodes_[victim].process->signal(SIGCONT);
    } else if (kind == "link_cut_both" || kind == "link_cut_one_way") {
      nodes_[victim].usable = false;
      if (kind == "link_cut_both")
        lab_->cut(static_cast<size_t>(victim));
      else
        lab_->cut_sends(static_cast<size_t>(victim));
      std::this_thread::sleep_for(pause);
      healed = steady_clock::now();
      lab_->heal(static_cast<size_t>(victim));
    } else if (kind == "store_freeze") {
      if (!std::getenv("CHAOS_PAUSE"))
        pause = duration_cast<milliseconds>(duration<double>{uniform(2.0, 6.0)});
      server_.freeze();
      std::this_thread::sleep_for(pause);
      healed = steady_clock::now();
      server_.thaw();
    } else if (kind == "store_restart") {
      pause = {};
      if (!server_.crash_and_restart())
        report_.problems.push_back("the server did not start again after its crash");
      healed = steady_clock::now();
    } else { // sessions_terminated
      pause = {};
      auto n = query_value(s_.server, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE"
                                            " application_name LIKE 'sourcery % " + s_.schema + "'");
      what << " sessions=" << (n.empty() ? "0" : n);
      healed = steady_clock::now();
    }
    if (pause.count() > 0)
      what << " seconds=" << pause.count() / 1000.0;
    if (node_fault && !nodes_[victim].usable.load() && !healthy_within(static_cast<size_t>(victim), std::chrono::seconds{15}))
      report_.problems.push_back("node " + std::to_string(victim) + " was not healthy within 15 s of " + what.str()
                                 + " healing");
    f.what = what.str();
    if (std::getenv("CHAOS_DEBUG"))
      std::fprintf(stderr, "debug %ld: healed\n", (long)time(nullptr));
    f.recovery_seconds = all_serve_after(healed);
    close_window(f);
    for (size_t i = 0; i < node_count; ++i)
      if (nodes_[i].process && nodes_[i].process->wait_for(std::chrono::milliseconds{1}).has_value()) {
        ++report_.node_exits;
        report_.problems.push_back("node " + std::to_string(i) + " exited after " + f.what);
      }
    if (f.recovery_seconds < 0)
      report_.worst_recovery_seconds = -1;
    else if (report_.worst_recovery_seconds >= 0)
      report_.worst_recovery_seconds = std::max(report_.worst_recovery_seconds, f.recovery_seconds);
    char line[512];
    std::snprintf(line, sizeof line, "fault %s: every node served every account %.2f s after it healed; unfaulted"
                  " accounts %d/%d OK", f.what.c_str(), f.recovery_seconds, f.unfaulted_ok, f.unfaulted_total);
    s_.say(line);
    report_.faults.push_back(std::move(f));
  }

  // -- the checkers -------------------------------------------------------------

  std::atomic<bool> watching_{false};
  std::thread watcher_;
  std::atomic<int> backwards_{0}, seen_{0};

  void watch_checkpoints() {
    watching_ = true;
    watcher_ = std::thread{[this] {
      persistence::postgres_read_model_options o;
      o.conninfo = s_.server;
      o.schema = s_.schema;
      o.connect_timeout = std::chrono::seconds{2};
      uint64_t last = 0;
      std::unique_ptr<persistence::postgres_projection_store> models;
      while (watching_.load()) {
        if (!models) // opened again after the server's restart
          if (auto m = persistence::postgres_projection_store::open(o))
            models = std::move(*m);
        if (models) {
          if (auto cp = models->checkpoint("bank.balances"); cp && *cp) {
            if (**cp < last)
              ++backwards_;
            ++seen_;
            last = std::max(last, **cp);
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds{20});
      }
    }};
  }

  void finish() {
    stop_load();
    stop_pressure();
    if (!report_.problems.empty())
      return;
    watching_ = false;
    watcher_.join();
    report_.checkpoint_backwards = backwards_.load();
    report_.checkpoint_seen = seen_.load();
    std::set<std::string> acked;
    {
      std::lock_guard guard{ledger_mtx_};
      acked = acked_;
    }
    report_.acknowledged = acked.size();
    auto v = check_bank_ledger(s_.server, s_.schema, accounts, acked, host(0), nodes_[0].http);
    report_.lost = v.lost;
    report_.duplicated = v.duplicated;
    report_.version_gaps = v.version_gaps;
    report_.money_deposited = v.deposited;
    report_.money_held = v.held;
    report_.projection_agrees = v.projection_agrees;
    for (auto& p : v.problems)
      report_.problems.push_back(p);
    if (lease_log_) {
      try {
        auto late = testing::late_commits(s_.server, s_.schema);
        report_.batches_checked = static_cast<int>(late.batches);
        report_.batches_handed_over = static_cast<int>(late.handed_over);
        report_.late_commits = std::move(late.late);
      } catch (const std::exception& e) {
        report_.problems.push_back(e.what());
      }
    }
    if (auto now = server_.log_count("deadlock detected"); now >= 0 && deadlocks_before_ >= 0)
      report_.deadlocks = now - deadlocks_before_; // this run's, not the log's earlier ones
  }

  chaos_settings s_;
  std::string uri_;
  server_control server_;
  std::unique_ptr<netns_lab> lab_;
  node nodes_[node_count];
  std::mt19937 rng_;
  int probe_round_ = 0;
  int deadlocks_before_ = -1;
  bool lease_log_ = false;
  chaos_report report_;
};

} // namespace sourcery::testing
