#pragma once

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <signal.h>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/postgres_store.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "process_tree.hpp"
#include "temp_dir.hpp"

namespace sourcery::testing {

/// The URI of the test server (ctest's `postgres` fixture sets
/// SOURCERY_TEST_PG). A test that needs it fails, loudly, without it.
inline std::string test_pg_uri() {
  const char* uri = std::getenv("SOURCERY_TEST_PG");
  if (!uri || !*uri)
    throw std::runtime_error("SOURCERY_TEST_PG is not set: run the tests through ctest (its `postgres` fixture starts"
                             " a server) or start one with scripts/pg.sh and export its URI");
  return uri;
}

/// A fresh schema name per test storage: tests share one server.
inline std::string test_schema(const temp_dir& dir) {
  return "t_" + std::to_string(std::hash<std::string>{}(dir.str()) % 1000000000000ull);
}

/// Creates the store `uri` names, as `sourcery init` does (applications
/// and programs open only an existing one); returns `uri`.
/// A server too loaded to answer within the store's deadlines (the whole
/// suite beside busy loops) is asked again for 60 s: creating is idempotent,
/// and it is the test's setup, not what it tests.
inline std::string init_test_store(const std::string& uri) {
  auto parsed = persistence::store_uri::parse(uri);
  if (!parsed)
    throw std::runtime_error("bad store URI: " + persistence::describe(parsed.error()));
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds{60};
  for (;;) {
    auto made = persistence::init_store(*parsed);
    if (made)
      return uri;
    auto code = persistence::code_of(made.error());
    if ((code != persistence::store_errc::timeout && code != persistence::store_errc::unavailable)
        || std::chrono::steady_clock::now() >= until)
      throw std::runtime_error("cannot create the store: " + persistence::describe(made.error()));
    std::this_thread::sleep_for(std::chrono::milliseconds{100});
  }
}

/// The URI of a store of the test's own on the test server (schema
/// `test_schema(dir)`), created.
inline std::string test_pg_store(const temp_dir& dir) {
  return init_test_store(test_pg_uri() + "&schema=" + test_schema(dir));
}

/// Options of a store of the test's own, created at its first open.
inline persistence::postgres_options test_pg_options(const temp_dir& dir) {
  persistence::postgres_options opts;
  opts.conninfo = test_pg_uri();
  opts.schema = test_schema(dir);
  opts.setup = persistence::schema_setup::create;
  opts.poll_interval = std::chrono::milliseconds{200};
  return opts;
}

inline std::unique_ptr<persistence::postgres_store> open_test_pg(const persistence::postgres_options& opts) {
  auto s = persistence::postgres_store::open(opts);
  if (!s)
    throw std::runtime_error("cannot open the PostgreSQL store: " + persistence::describe(s.error()));
  return std::move(*s);
}

/// Runs `sql` (statements separated by ';') on a connection of its own, as
/// another client would; throws with the server's message on failure.
/// Returns the first column of the first row of the last result, if any.
inline std::string run_sql(const std::string& uri, const std::string& sql) {
  PGconn* c = PQconnectdb(uri.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c);
    PQfinish(c);
    throw std::runtime_error("connect: " + msg);
  }
  PGresult* r = PQexec(c, sql.c_str());
  auto status = PQresultStatus(r);
  std::string value;
  if (status == PGRES_TUPLES_OK && PQntuples(r) > 0)
    value = PQgetvalue(r, 0, 0);
  std::string msg = PQresultErrorMessage(r);
  PQclear(r);
  PQfinish(c);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK)
    throw std::runtime_error("SQL failed: " + msg + " in: " + sql);
  return value;
}

/// A client session kept open across statements (to hold a transaction).
class pg_session {
public:
  explicit pg_session(const std::string& uri) : c_(PQconnectdb(uri.c_str())) {
    if (PQstatus(c_) != CONNECTION_OK)
      throw std::runtime_error(std::string{"connect: "} + PQerrorMessage(c_));
  }
  ~pg_session() { PQfinish(c_); }
  pg_session(const pg_session&) = delete;
  pg_session& operator=(const pg_session&) = delete;
  std::string run(const std::string& sql) {
    PGresult* r = PQexec(c_, sql.c_str());
    auto status = PQresultStatus(r);
    std::string value;
    if (status == PGRES_TUPLES_OK && PQntuples(r) > 0)
      value = PQgetvalue(r, 0, 0);
    std::string msg = PQresultErrorMessage(r);
    PQclear(r);
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK)
      throw std::runtime_error("SQL failed: " + msg + " in: " + sql);
    return value;
  }
  /// Every row of `sql`'s result, each column as text (NULL as "").
  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    PGresult* r = PQexec(c_, sql.c_str());
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      std::string msg = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error("SQL failed: " + msg + " in: " + sql);
    }
    std::vector<std::vector<std::string>> out(static_cast<size_t>(PQntuples(r)));
    for (int i = 0; i < PQntuples(r); ++i)
      for (int j = 0; j < PQnfields(r); ++j)
        out[static_cast<size_t>(i)].emplace_back(PQgetvalue(r, i, j));
    PQclear(r);
    return out;
  }

private:
  PGconn* c_;
};

/// Ends the server sessions of `role` ("writer", "listener", "reader") of
/// the store on `schema`, as an operator's pg_terminate_backend would;
/// returns how many.
inline int terminate_sessions(const std::string& uri, const std::string& schema, const std::string& role) {
  auto n = run_sql(uri, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'sourcery "
                          + role + " " + schema + "'");
  return std::stoi(n.empty() ? "0" : n);
}

// A server of the test's own, for faults that would disturb every other
// test on the shared one (SIGSTOP, restart).
class private_server {
public:
  /// `script`: scripts/pg.sh of the source tree.
  explicit private_server(std::string script)
    : script_(std::move(script)), dir_("/tmp/sourcery-pgp-" + std::to_string(std::random_device{}() % 100000000)) {
    uri_ = run("start");
    while (!uri_.empty() && uri_.back() == '\n')
      uri_.pop_back();
    if (uri_.rfind("postgresql://", 0) != 0)
      throw std::runtime_error("could not start a private PostgreSQL server: " + uri_);
  }
  /// A streaming replica of `primary`, which becomes synchronous (every
  /// commit on both before it is acknowledged); `uri()` then names both,
  /// primary first, for whichever is writable (target_session_attrs).
  private_server(std::string script, const private_server& primary)
    : script_(std::move(script)), dir_("/tmp/sourcery-pgs-" + std::to_string(std::random_device{}() % 100000000)) {
    uri_ = run("standby", primary.dir_);
    while (!uri_.empty() && uri_.back() == '\n')
      uri_.pop_back();
    if (uri_.rfind("postgresql://", 0) != 0)
      throw std::runtime_error("could not start a standby PostgreSQL server: " + uri_);
  }
  /// A server as production sets one up (scripts/pg.sh secure): TCP on
  /// 127.0.0.1:`port`, TLS only with `cert` and `key`, SCRAM-SHA-256
  /// passwords. `uri()` is its unix socket, trusted, for setting up roles.
  struct secure_setup {
    std::string cert, key;
    uint16_t port = 0;
  };
  private_server(std::string script, const secure_setup& tls)
    : script_(std::move(script)), dir_("/tmp/sourcery-pgt-" + std::to_string(std::random_device{}() % 100000000)) {
    uri_ = run("secure", tls.cert + " " + tls.key + " " + std::to_string(tls.port));
    while (!uri_.empty() && uri_.back() == '\n')
      uri_.pop_back();
    if (uri_.rfind("postgresql://", 0) != 0)
      throw std::runtime_error("could not start a secure PostgreSQL server: " + uri_);
  }
  ~private_server() {
    resume();
    run("destroy");
  }
  const std::string& uri() const { return uri_; }
  /// Stops the server at once, as a crash would (pg_ctl -m immediate).
  void kill() { run("kill"); }
  /// Makes this standby the primary.
  void promote() { run("promote"); }
  /// Starts it again (after `kill` or `stop`).
  void start() { run("start"); }
  /// Stops it cleanly, as an operator would (pg_ctl stop).
  void stop() { run("stop"); }
  /// How many lines of the server's log hold `text` (e.g. "deadlock detected").
  int log_count(const std::string& text) const {
    std::ifstream log{dir_ + "/server.log"};
    int n = 0;
    for (std::string line; std::getline(log, line);)
      n += line.find(text) != std::string::npos;
    return n;
  }

  void pause() { signal_all(SIGSTOP); }
  void resume() { signal_all(SIGCONT); }
  void restart() {
    run("stop");
    run("start");
  }

private:
  std::string run(const std::string& cmd, const std::string& extra = {}) {
    std::string line = "bash " + script_ + " " + cmd + " " + dir_ + (extra.empty() ? "" : " " + extra) + " 2>&1";
    std::string out;
    if (FILE* p = ::popen(line.c_str(), "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof buf, p))
        out += buf;
      ::pclose(p);
    }
    return out;
  }
  // The postmaster and every process it started.
  void signal_all(int sig) {
    std::ifstream pidfile{dir_ + "/data/postmaster.pid"};
    pid_t master = 0;
    if (pidfile >> master)
      signal_process_tree(master, sig);
  }
  std::string script_;
  std::string dir_;
  std::string uri_;
};

} // namespace sourcery::testing
