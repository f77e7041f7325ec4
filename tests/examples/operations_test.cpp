// Operating the programs as a user does (issue 26): no secret in anything
// they print, /health telling the truth about the store and answering at
// once, read-only commands that create nothing, and the demos saying where
// they store. Real processes, a real PostgreSQL server.

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../support/child_process.hpp"
#include "../support/file_search.hpp"
#include "../support/eventually.hpp"
#include "../support/http_client.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"

using namespace std::chrono_literals;
using sourcery::test::http_client;
using sourcery::testing::child_process;
using json = nlohmann::json;
using sourcery::testing::eventually;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in{path};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Runs `program` to its end; (exit status, stdout + stderr).
std::pair<int, std::string> run(const std::string& program, const std::vector<std::string>& args,
                                const sourcery::testing::temp_dir& dir) {
  auto err = (dir / "stderr").string();
  child_process p{program, args, err};
  auto out = p.read_all();
  int status = p.wait();
  return {status, out + slurp(err)};
}

/// The todo-server's port from its "listening on" line.
uint16_t port_of(const std::string& line) {
  auto at = line.find("127.0.0.1:");
  if (at == std::string::npos)
    return 0;
  return static_cast<uint16_t>(std::stoi(line.substr(at + 10)));
}


int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

} // namespace

// Every line the programs print -- the server's announcement and logs,
// /health and /metrics, each tool command's text and JSON, and error lines
// -- with a password in either form of the URI: the password is in none.
TEST(operations, no_program_prints_a_password_in_either_form) {
  sourcery::testing::temp_dir dir;
  auto schema = sourcery::testing::test_schema(dir);
  const std::string secret = "hunter2secret";
  // The test server trusts local connections: libpq sends no password, and
  // the URI carries one as a user's would.
  auto base = sourcery::testing::test_pg_uri() + "&schema=" + schema;
  auto with_param = base + "&password=" + secret;
  std::string printed;

  {
    auto [status, out] = run(SOURCERY_CLI_PATH, {"init", "--store", with_param}, dir);
    ASSERT_EQ(status, 0) << out;
    printed += out;
  }
  child_process server{TODO_SERVER_PATH, {"--port", "0", "--store", with_param}, (dir / "server.err").string()};
  auto line = server.read_line();
  printed += line + "\n";
  auto port = port_of(line);
  ASSERT_NE(port, 0) << line;
  {
    http_client client{port};
    ASSERT_EQ(client.post("/todos", {{"title", "milk"}}).status, 201);
    printed += client.get("/health").body + client.get("/metrics").body;
  }
  for (auto& cmd : std::vector<std::vector<std::string>>{{"stats"}, {"stats", "--json"}, {"streams"}, {"all"},
                                                         {"verify"}, {"verify", "--json"}, {"cluster"}}) {
    auto args = cmd;
    args.insert(args.end(), {"--store", with_param});
    auto [status, out] = run(SOURCERY_CLI_PATH, args, dir);
    EXPECT_EQ(status, 0) << cmd[0] << ": " << out;
    printed += out;
  }
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
  printed += slurp((dir / "server.err").string());

  // user:password@ on a server that is not there: the error lines.
  const std::string unreachable = "postgresql://app:" + secret + "@127.0.0.1:1/db?password=" + secret
                                  + "&connect_timeout=1";
  for (auto* program : {TODO_SERVER_PATH, BANK_DEMO_PATH, SOURCERY_CLI_PATH}) {
    std::vector<std::string> args{"--store", unreachable};
    if (std::string{program} == SOURCERY_CLI_PATH)
      args.insert(args.begin(), "stats");
    auto [status, out] = run(program, args, dir);
    EXPECT_NE(status, 0) << program << ": " << out;
    EXPECT_NE(out.find("127.0.0.1:1"), std::string::npos) << program << " says where it failed: " << out;
    printed += out;
  }
  // A bad URI quoted in its error.
  auto [bad_status, bad] = run(SOURCERY_CLI_PATH, {"stats", "--store", "postgresql://x?password=" + secret + "&connect_timeout=zz"}, dir);
  EXPECT_EQ(bad_status, 2) << bad; // a bad argument
  printed += bad;

  EXPECT_EQ(printed.find(secret), std::string::npos) << printed;
  EXPECT_NE(printed.find("password=***"), std::string::npos) << "the URI shown says a password was given";
}

// The store can come from the environment, so that no secret is in argv.
TEST(operations, the_store_can_come_from_sourcery_store) {
  sourcery::testing::temp_dir dir;
  auto uri = sourcery::testing::test_pg_store(dir);
  ::setenv("SOURCERY_STORE", uri.c_str(), 1);
  child_process server{TODO_SERVER_PATH, {"--port", "0"}};
  ::unsetenv("SOURCERY_STORE");
  auto line = server.read_line();
  ASSERT_NE(line.find("postgresql://"), std::string::npos) << line;
  auto port = port_of(line);
  ASSERT_NE(port, 0) << line;
  http_client client{port};
  ASSERT_EQ(client.post("/todos", {{"title", "from the environment"}}).status, 201);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);

  ::setenv("SOURCERY_STORE", uri.c_str(), 1);
  auto [status, out] = run(SOURCERY_CLI_PATH, {"streams", "--json"}, dir);
  ::unsetenv("SOURCERY_STORE");
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\"stream\":\"todo-"), std::string::npos) << out;
}

// Nothing but `sourcery init` creates a store: a command that only reads
// says "no Sourcery store" with status 2, an application refuses to start,
// and the schema is still not there after.
TEST(operations, only_sourcery_init_creates_a_store) {
  sourcery::testing::temp_dir dir;
  auto schema = sourcery::testing::test_schema(dir) + "_none";
  auto uri = sourcery::testing::test_pg_uri() + "&schema=" + schema;
  for (auto* cmd : {"streams", "read", "all", "verify", "stats", "export"}) {
    std::vector<std::string> args{cmd, "--store", uri};
    if (std::string{cmd} == "read")
      args.insert(args.begin() + 1, "todo-1");
    auto [status, out] = run(SOURCERY_CLI_PATH, args, dir);
    EXPECT_EQ(status, 2) << cmd << ": " << out;
    EXPECT_NE(out.find("no Sourcery event store in schema " + schema), std::string::npos) << cmd << ": " << out;
    EXPECT_EQ(out.find("ok: the store is intact"), std::string::npos) << out;
  }
  // Nor does an application start: it opens only a store that exists.
  for (auto* program : {TODO_SERVER_PATH, BANK_DEMO_PATH}) {
    auto [status, out] = run(program, {"--store", uri}, dir);
    EXPECT_NE(status, 0) << program << ": " << out;
    EXPECT_NE(out.find("no Sourcery store in schema " + schema + ": create it first with `sourcery init --store URI`"),
              std::string::npos)
      << program << ": " << out;
  }
  EXPECT_EQ(sourcery::testing::run_sql(sourcery::testing::test_pg_uri(),
                                       "SELECT count(*) FROM pg_namespace WHERE nspname = '" + schema + "'"),
            "0");
  // `sourcery init` creates it; then the application starts on it.
  auto [made, made_out] = run(SOURCERY_CLI_PATH, {"init", "--store", uri}, dir);
  EXPECT_EQ(made, 0) << made_out;
  EXPECT_NE(made_out.find("created a Sourcery store in"), std::string::npos) << made_out;
  auto [again, again_out] = run(SOURCERY_CLI_PATH, {"init", "--store", uri}, dir);
  EXPECT_EQ(again, 0) << again_out;
  EXPECT_NE(again_out.find("already holds a Sourcery store"), std::string::npos) << again_out;
  {
    child_process server{TODO_SERVER_PATH, {"--port", "0", "--store", uri}, (dir / "server.err").string()};
    auto port = port_of(server.read_line());
    ASSERT_NE(port, 0) << slurp((dir / "server.err").string());
    EXPECT_EQ(http_client{port}.post("/todos", {{"title", "after init"}}).status, 201);
    server.signal(SIGTERM);
    EXPECT_EQ(server.wait(), 0);
  }
  auto [dropped, dropped_out] = run(SOURCERY_CLI_PATH, {"drop", "--yes", "--store", uri}, dir);
  EXPECT_EQ(dropped, 0) << dropped_out;
}

// With the database stopped under a single server: /health says so with a
// 503 (and at once), a POST is 503, /metrics counts it as unavailable; the
// log says once that the store went and once that it is back; then all
// serves again.
TEST(operations, health_tells_a_stopped_database_and_its_return) {
  sourcery::testing::temp_dir dir;
  sourcery::testing::private_server db{SOURCERY_PG_SCRIPT};
  auto log = (dir / "server.err").string();
  child_process server{TODO_SERVER_PATH, {"--port", "0", "--store", sourcery::testing::init_test_store(db.uri() + "&operation_timeout=2&connect_timeout=1")},
                       log};
  auto port = port_of(server.read_line());
  ASSERT_NE(port, 0);
  http_client client{port};
  ASSERT_EQ(client.post("/todos", {{"title", "before"}}).status, 201);
  auto health = [&] {
    http_client c{port};
    c.set_timeout(5s);
    auto t0 = std::chrono::steady_clock::now();
    auto r = c.get("/health");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "/health answers within a second";
    return r;
  };
  EXPECT_EQ(health().status, 200);

  db.stop();
  ASSERT_TRUE(eventually([&] { return health().status == 503; }, 10s)) << health().body;
  auto down = health();
  EXPECT_EQ(down.json()["status"], "unavailable") << down.body;
  EXPECT_NE(down.json()["reason"].get<std::string>().find("store"), std::string::npos) << down.body;
  {
    http_client c{port};
    c.set_timeout(10s);
    EXPECT_EQ(c.post("/todos", {{"title", "while stopped"}}).status, 503);
    auto metrics = c.get("/metrics").body;
    EXPECT_EQ(metrics.find("sourcery_commands_total{outcome=\"unavailable\"} 0"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("sourcery_commands_total{outcome=\"error\"} 0"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("sourcery_store_up 0"), std::string::npos) << metrics;
  }

  db.start();
  ASSERT_TRUE(eventually([&] { return health().status == 200; }, 15s)) << health().body;
  EXPECT_TRUE(eventually([&] {
    http_client c{port};
    return c.post("/todos", {{"title", "after"}}).status == 201;
  }, 15s));
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
  auto text = slurp(log);
  EXPECT_EQ(count_of(text, "the store is unavailable"), 1) << text;
  EXPECT_EQ(count_of(text, "the store is back"), 1) << text;
}

// A query waiting on a frozen database holds no other request: /health
// answers within a second (with a 503 once the database has been silent
// for two), while the GET waits on a worker thread.
TEST(operations, a_slow_query_delays_nobody_else) {
  sourcery::testing::private_server db{SOURCERY_PG_SCRIPT};
  child_process server{TODO_SERVER_PATH, {"--port", "0", "--store", sourcery::testing::init_test_store(db.uri() + "&operation_timeout=4")}};
  auto port = port_of(server.read_line());
  ASSERT_NE(port, 0);
  {
    http_client client{port};
    ASSERT_EQ(client.post("/todos", {{"title", "before"}}).status, 201);
  }
  db.pause();
  std::atomic<unsigned> listed{0};
  std::thread reader{[&] {
    http_client c{port};
    c.set_timeout(20s);
    listed = c.get("/todos").status;
  }};
  // /health answers within a second each time it is asked, with a 503 once
  // the database has been silent for two (the GET waits meanwhile).
  auto health_says_unavailable = [&] {
    http_client c{port};
    c.set_timeout(5s);
    auto t0 = std::chrono::steady_clock::now();
    auto status = c.get("/health").status;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
    return status == 503;
  };
  EXPECT_TRUE(eventually(health_says_unavailable, 10s)) << "the frozen database shows in /health";
  db.resume();
  reader.join();
  EXPECT_NE(listed.load(), 0u);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
}

// The demos say where they store, refuse options that contradict each
// other, and answer --help with status 0.
TEST(operations, the_demos_say_where_they_store) {
  sourcery::testing::temp_dir dir;
  auto zz = (dir / "zz").string();
  auto [status, out] = run(BANK_DEMO_PATH, {"--store", "lmdb:" + zz}, dir);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("store: LMDB in " + zz), std::string::npos) << out;
  EXPECT_EQ(out.find("sourcery-data"), std::string::npos) << out;

  auto [both, refused] = run(MEETUP_DEMO_PATH, {"--store", "lmdb:" + zz, "--in-memory"}, dir);
  EXPECT_EQ(both, 2) << refused;
  EXPECT_NE(refused.find("--store excludes --in-memory"), std::string::npos) << refused;

  for (auto* program : {STORE_DEMO_PATH, BANK_DEMO_PATH, MEETUP_DEMO_PATH, TODO_SERVER_PATH, BANK_NODE_PATH}) {
    auto [help, text] = run(program, {"--help"}, dir);
    EXPECT_EQ(help, 0) << program << ": " << text;
    EXPECT_NE(text.find("--store"), std::string::npos) << program << ": " << text;
  }
}

// Moving bank-demo's store from LMDB to PostgreSQL carries its transfer
// saga's state and position: the next run on PostgreSQL accepts what a
// second run on LMDB accepts (14 commands), not the saga's history again.
// The balances projection the program registers is rebuilt; the generic
// tool, which does not know it, says so and leaves it at the head.
TEST(operations, a_migration_runs_no_process_manager_again) {
  sourcery::testing::temp_dir dir;
  auto lmdb = (dir / "bank").string();
  auto [first, first_out] = run(BANK_DEMO_PATH, {"--data-dir", lmdb}, dir);
  ASSERT_EQ(first, 0) << first_out;
  auto file = (dir / "bank.ndjson").string();
  auto [exported, export_out] = run(SOURCERY_CLI_PATH, {"export", "--data-dir", lmdb, "--output", file}, dir);
  ASSERT_EQ(exported, 0) << export_out;
  auto text = slurp(file);
  EXPECT_NE(text.find("\"kind\":\"read_model\",\"name\":\"process:bank.transfers\""), std::string::npos) << text;

  auto schema = sourcery::testing::test_schema(dir);
  auto pg = sourcery::testing::test_pg_uri() + "&schema=" + schema;
  auto [imported, import_out] = run(BANK_DEMO_PATH, {"admin", "import", "--store", pg, "--input", file, "--json"}, dir);
  ASSERT_EQ(imported, 0) << import_out;
  auto said = json::parse(import_out.substr(0, import_out.find('\n')));
  std::map<std::string, std::string> outcome;
  for (auto& m : said["read_models"])
    outcome[m["name"]] = m["outcome"];
  EXPECT_EQ(outcome["process:bank.transfers"], "carried") << import_out;
  EXPECT_EQ(outcome["bank.balances"], "rebuilt") << import_out;

  auto [second_pg, pg_out] = run(BANK_DEMO_PATH, {"--store", pg}, dir);
  ASSERT_EQ(second_pg, 0) << pg_out;
  auto [second_lmdb, lmdb_out] = run(BANK_DEMO_PATH, {"--data-dir", lmdb}, dir);
  ASSERT_EQ(second_lmdb, 0) << lmdb_out;
  auto summary = [](const std::string& out) {
    auto at = out.find("This run: ");
    return at == std::string::npos ? std::string{} : out.substr(at, out.find(" commands accepted", at) - at);
  };
  EXPECT_EQ(summary(pg_out), "This run: 14") << pg_out; // 13, and carol's deposit after her forget
  EXPECT_EQ(summary(pg_out), summary(lmdb_out));

  // The generic tool knows no projection of the bank's: it says what it
  // could not carry.
  auto [plain, plain_out] = run(SOURCERY_CLI_PATH, {"import", "--store", pg + "_plain", "--input", file}, dir);
  EXPECT_EQ(plain, 0) << plain_out;
  EXPECT_NE(plain_out.find("bank.balances"), std::string::npos) << plain_out;
  EXPECT_NE(plain_out.find("not carried"), std::string::npos) << plain_out;
  EXPECT_NE(plain_out.find("process:bank.transfers           carried"), std::string::npos) << plain_out;
}

// bank-node's HTTP follows HTTP: unknown resources are 404, a body that is
// not JSON is 415, a rejection explains itself rather than repeat its code;
// and it listens on loopback unless told otherwise.
TEST(operations, bank_node_answers_as_http_says) {
  sourcery::testing::temp_dir dir;
  child_process node{BANK_NODE_PATH, {"--http", "0", "--data-dir", (dir / "bank").string()}};
  auto line = node.read_line();
  auto port = port_of(line);
  ASSERT_NE(port, 0) << line;
  http_client client{port};
  EXPECT_EQ(client.get("/accounts/nobody").status, 404);
  EXPECT_EQ(client.get("/transfers/nope").status, 404);
  auto opened = client.post("/accounts", {{"account", "ann"}});
  ASSERT_EQ(opened.status, 201) << opened.body;
  EXPECT_EQ(client.get("/accounts/ann").json()["open"], true);
  auto wrong_type = client.request("POST", "/accounts", "account=bob", {{"content-type", "application/x-www-form-urlencoded"}});
  EXPECT_EQ(wrong_type.status, 415) << wrong_type.body;
  auto refused = client.post("/accounts/ghost/withdrawals", {{"amount", 5}});
  EXPECT_EQ(refused.status, 422);
  EXPECT_EQ(refused.json()["error"], "not_open");
  EXPECT_NE(refused.json()["message"], refused.json()["error"]) << refused.body;
  auto again = client.post("/accounts", {{"account", "ann"}});
  EXPECT_NE(again.json()["message"], "already_open") << again.body;
  node.signal(SIGTERM);
  EXPECT_EQ(node.wait(), 0);
}

// The life of a subject over HTTP: the owner's name is shown, then
// forgotten for good, while the account works on; the store's files never
// held the name.
TEST(operations, bank_node_forgets_an_owner) {
  sourcery::testing::temp_dir dir;
  const std::string name = "Zoe Plaintext-Quinn-9903";
  {
    child_process node{BANK_NODE_PATH, {"--http", "0", "--data-dir", (dir / "bank").string()}};
    auto port = port_of(node.read_line());
    ASSERT_NE(port, 0);
    http_client client{port};
    ASSERT_EQ(client.post("/accounts", {{"account", "zq"}, {"owner", name}}).status, 201);
    ASSERT_EQ(client.post("/accounts", {{"account", "ann"}, {"owner", "Ann Other"}}).status, 201);
    EXPECT_EQ(client.get("/accounts/zq").json()["owner"], name);
    auto forgot = client.del("/accounts/zq/personal-data");
    ASSERT_EQ(forgot.status, 200) << forgot.body;
    EXPECT_EQ(forgot.json()["had_key"], true) << forgot.body;
    auto after = client.get("/accounts/zq").json();
    EXPECT_TRUE(after["owner"].is_null()) << after.dump();
    EXPECT_EQ(client.get("/accounts/ann").json()["owner"], "Ann Other");
    EXPECT_EQ(client.post("/accounts/zq/deposits", {{"amount", 5}}).status, 200);
    EXPECT_EQ(client.get("/accounts/zq").json()["balance"], 5);
    auto again = client.del("/accounts/zq/personal-data");
    EXPECT_EQ(again.status, 200);
    EXPECT_EQ(again.json()["had_key"], false) << "idempotent";
    node.signal(SIGTERM);
    EXPECT_EQ(node.wait(), 0);
  }
  EXPECT_FALSE(sourcery::testing::files_hold(dir.path(), name)) << "the store's files never held the name";
}

// Two deposits of the largest amount used to answer a balance of -2 (a
// signed overflow: undefined behaviour). Sums are checked and refused.
TEST(operations, bank_amounts_at_the_edges_are_refused_with_a_reason) {
  sourcery::testing::temp_dir dir;
  child_process node{BANK_NODE_PATH, {"--http", "0", "--data-dir", (dir / "bank").string()}};
  auto port = port_of(node.read_line());
  ASSERT_NE(port, 0);
  http_client client{port};
  constexpr int64_t most = std::numeric_limits<int64_t>::max();
  ASSERT_EQ(client.post("/accounts", {{"account", "rich"}}).status, 201);
  ASSERT_EQ(client.post("/accounts", {{"account", "poor"}}).status, 201);
  EXPECT_EQ(client.post("/accounts/rich/deposits", {{"amount", most}}).status, 200);
  auto past = client.post("/accounts/rich/deposits", {{"amount", most}});
  EXPECT_EQ(past.status, 422) << past.body;
  EXPECT_EQ(past.json()["error"], "balance_limit") << past.body;
  auto one_more = client.post("/accounts/rich/deposits", {{"amount", 1}});
  EXPECT_EQ(one_more.json()["error"], "balance_limit") << one_more.body;
  EXPECT_EQ(client.get("/accounts/rich").json()["balance"], most);
  auto beyond = client.request("POST", "/accounts/poor/deposits", R"({"amount": 9223372036854775808})");
  EXPECT_EQ(beyond.status, 422) << beyond.body;
  EXPECT_EQ(beyond.json()["error"], "invalid_field") << beyond.body;
  auto negative = client.post("/accounts/poor/withdrawals", {{"amount", -5}});
  EXPECT_EQ(negative.status, 422) << negative.body;
  EXPECT_EQ(negative.json()["error"], "invalid_amount") << negative.body;
  auto lowest = client.post("/accounts/poor/withdrawals", {{"amount", std::numeric_limits<int64_t>::min()}});
  EXPECT_EQ(lowest.json()["error"], "invalid_amount") << lowest.body;
  EXPECT_EQ(client.get("/accounts/poor").json()["balance"], 0);
  // A transfer into a full account fails, and its money goes back.
  ASSERT_EQ(client.post("/accounts/poor/deposits", {{"amount", 10}}).status, 200);
  ASSERT_EQ(client.post("/transfers", {{"transfer", "t1"}, {"from", "poor"}, {"to", "rich"}, {"amount", 10}}).status, 201);
  EXPECT_TRUE(sourcery::testing::eventually([&] { return client.get("/transfers/t1").json()["stage"] == "failed"; }));
  EXPECT_TRUE(sourcery::testing::eventually([&] { return client.get("/accounts/poor").json()["balance"] == 10; }));
  EXPECT_EQ(client.get("/accounts/rich").json()["balance"], most);
  node.signal(SIGTERM);
  EXPECT_EQ(node.wait(), 0);
}

// A store this user may not read is named as such -- never "no store", never
// a crash -- by the tool and by an application (run as `nobody`: the suite
// runs as root, which no permission stops).
TEST(operations, an_lmdb_store_another_user_owns_is_refused_as_permission_denied) {
  ASSERT_EQ(::geteuid(), 0u) << "this test runs the programs as another user: run the suite as root (CI does)";
  sourcery::testing::temp_dir dir;
  auto data = (dir / "data").string();
  ASSERT_EQ(run(BANK_DEMO_PATH, {"--data-dir", data}, dir).first, 0);
  ::chmod(dir.str().c_str(), 0755); // nobody may reach the store's folder, not look into it
  auto as_nobody = [&](const std::string& program, std::vector<std::string> args) {
    args.insert(args.begin(), {"-u", "nobody", "--", program});
    return run("/usr/sbin/runuser", args, dir);
  };
  // Its folder closed to others: nothing in it can be seen.
  ::chmod(data.c_str(), 0700);
  auto [closed_status, closed] = as_nobody(SOURCERY_CLI_PATH, {"streams", "--store", "lmdb:" + data});
  EXPECT_EQ(closed_status, 1) << closed;
  EXPECT_NE(closed.find("permission denied"), std::string::npos) << closed;
  EXPECT_EQ(closed.find("no store"), std::string::npos) << closed;
  auto [app_status, app] = as_nobody(BANK_DEMO_PATH, {"--data-dir", data});
  EXPECT_NE(app_status, 0) << app;
  EXPECT_NE(app.find("Permission denied"), std::string::npos) << app;
  // Its files readable but not writable: LMDB readers need the lock file.
  ::chmod(data.c_str(), 0755);
  auto [read_status, read] = as_nobody(SOURCERY_CLI_PATH, {"streams", "--store", "lmdb:" + data});
  EXPECT_EQ(read_status, 1) << read;
  EXPECT_NE(read.find("permission denied"), std::string::npos) << read;
  EXPECT_NE(read.find("lock.mdb"), std::string::npos) << read;
  // Nothing was changed or broken: its owner reads it as before.
  auto [owner_status, owner] = run(SOURCERY_CLI_PATH, {"verify", "--store", "lmdb:" + data}, dir);
  EXPECT_EQ(owner_status, 0) << owner;
}
