// The todo example: the aggregate's invariants, the Todo-Backend API through
// a real HTTP client, and the todo-server killed and restarted.

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "../../examples/todo/todo_api.hpp"
#include "../support/free_port.hpp"
#include "../support/child_process.hpp"
#include "../support/eventually.hpp"
#include "../support/http_client.hpp"
#include "../support/postgres.hpp"
#include "../support/small_filesystem.hpp"
#include "../support/temp_dir.hpp"
#include "../support/test_ca.hpp"

using namespace std::chrono_literals;
using sourcery::test::http_client;
using json = nlohmann::json;

namespace {

todo::todo created(std::string title = "milk") {
  todo::todo t;
  t.apply(todo::todo_created{std::move(title), false, 0});
  return t;
}

template <class Outcome>
std::string rejection_of(const Outcome& o) {
  return o.rejected() ? o.why().reason : std::string{};
}

} // namespace

// -- the aggregate's invariants -----------------------------------------------

TEST(todo_aggregate, a_title_must_not_be_blank_or_huge) {
  todo::todo fresh;
  EXPECT_EQ(rejection_of(fresh.execute(todo::create_todo{"1", "  \t"})), "invalid_title");
  EXPECT_EQ(rejection_of(fresh.execute(todo::create_todo{"1", std::string(1001, 'x')})), "invalid_title");
  EXPECT_EQ(rejection_of(created().execute(todo::update_todo{"1", std::string{""}})), "invalid_title");
  EXPECT_FALSE(fresh.execute(todo::create_todo{"1", "milk"}).rejected());
}

TEST(todo_aggregate, created_once_and_completed_at_creation_if_asked) {
  todo::todo fresh;
  auto o = fresh.execute(todo::create_todo{"1", "milk", 4, true});
  ASSERT_FALSE(o.rejected());
  ASSERT_EQ(o.events().size(), 2u);
  EXPECT_EQ(std::get<todo::todo_created>(o.events()[0]).order, 4);
  EXPECT_TRUE(std::holds_alternative<todo::todo_completed>(o.events()[1]));
  EXPECT_EQ(rejection_of(created().execute(todo::create_todo{"1", "again"})), "already_exists");
}

TEST(todo_aggregate, a_patch_records_only_what_changed) {
  auto t = created("milk");
  auto same = t.execute(todo::update_todo{"1", std::string{"milk"}, false});
  EXPECT_FALSE(same.rejected());
  EXPECT_TRUE(same.events().empty());
  auto o = t.execute(todo::update_todo{"1", std::string{"oat milk"}, true, 2});
  ASSERT_EQ(o.events().size(), 3u);
  EXPECT_TRUE(std::holds_alternative<todo::todo_title_changed>(o.events()[0]));
  EXPECT_TRUE(std::holds_alternative<todo::todo_completed>(o.events()[1]));
  EXPECT_TRUE(std::holds_alternative<todo::todo_order_changed>(o.events()[2]));
  t.apply(todo::todo_completed{});
  auto back = t.execute(todo::update_todo{"1", std::nullopt, false});
  ASSERT_EQ(back.events().size(), 1u);
  EXPECT_TRUE(std::holds_alternative<todo::todo_uncompleted>(back.events()[0]));
}

TEST(todo_aggregate, nothing_happens_to_a_missing_or_deleted_todo) {
  todo::todo fresh;
  EXPECT_EQ(rejection_of(fresh.execute(todo::update_todo{"1", std::string{"x"}})), "not_found");
  EXPECT_EQ(rejection_of(fresh.execute(todo::delete_todo{"1"})), "not_found");
  auto t = created();
  t.apply(todo::todo_deleted{});
  EXPECT_EQ(rejection_of(t.execute(todo::update_todo{"1", std::nullopt, true})), "not_found");
  EXPECT_EQ(rejection_of(t.execute(todo::delete_todo{"1"})), "not_found");
  EXPECT_EQ(rejection_of(t.execute(todo::create_todo{"1", "again"})), "already_exists"); // ids are not reused
}

// -- the API, in process ----------------------------------------------------------

namespace {

struct todo_server : ::testing::Test {
  sourcery::testing::temp_dir dir;
  std::unique_ptr<sourcery::application> app;
  std::unique_ptr<todo::todo_api> api;
  sourcery::http::gateway gw;

  void SetUp() override {
    sourcery::application_config config;
    config.data_dir = dir.str();
    auto started = sourcery::application::start(config, todo::routes());
    ASSERT_TRUE(started) << sourcery::describe_error(started.error());
    app = std::move(*started);
    auto models = todo::start_read_model(*app);
    ASSERT_TRUE(models) << sourcery::describe_error(models.error());
    api = std::make_unique<todo::todo_api>(*app, **models);
    api->add_routes(gw);
    sourcery::http::gateway_config c;
    c.address = "127.0.0.1";
    c.port = 0;
    ASSERT_FALSE(gw.start(c));
  }
  void TearDown() override {
    gw.stop();
    if (app)
      app->stop();
  }
  std::string root() const { return "http://127.0.0.1:" + std::to_string(gw.port()); }
  /// The path of an absolute url of ours.
  std::string path_of(const std::string& url) const { return url.substr(root().size()); }
};

} // namespace

namespace {

// The behaviour the Todo-Backend spec runner checks, in its order, at the
// API root `base` ("/todos", or a tenant's "/acme/todos") of the server at
// `origin`.
void follow_todo_backend_spec(http_client& client, const std::string& origin, const std::string& base) {
  auto path_of = [&](const json& url) { return url.get<std::string>().substr(origin.size()); };
  auto r = client.get(base);
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.header("access-control-allow-origin"), "*");
  auto pre = client.request("OPTIONS", base, {},
                            {{"Origin", "http://www.todobackend.com"}, {"Access-Control-Request-Method", "POST"},
                             {"Access-Control-Request-Headers", "content-type"}});
  EXPECT_LT(pre.status, 300u);
  EXPECT_NE(pre.header("access-control-allow-methods").find("POST"), std::string::npos);
  EXPECT_EQ(pre.header("access-control-allow-headers"), "content-type");

  r = client.post(base, {{"title", "a todo"}});
  ASSERT_EQ(r.status, 201u);
  auto todo = r.json();
  EXPECT_EQ(todo["title"], "a todo");
  EXPECT_EQ(todo["completed"], false);
  ASSERT_TRUE(todo["url"].is_string());
  EXPECT_EQ(todo["url"].get<std::string>().rfind(origin + base + "/", 0), 0u);
  EXPECT_EQ(r.header("location"), todo["url"]);

  EXPECT_EQ(client.del(base).status, 204u);
  EXPECT_EQ(client.get(base).json(), json::array());

  auto first = client.post(base, {{"title", "walk the dog"}}).json();
  auto second = client.post(base, {{"title", "buy milk"}, {"order", 523}}).json();
  auto list = client.get(base).json();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["title"], "walk the dog"); // in the order they were created
  EXPECT_EQ(list[1]["order"], 523);

  // Navigate by url, then change what a PATCH may change.
  auto url = path_of(first["url"]);
  EXPECT_EQ(client.get(url).json(), first);
  r = client.patch(url, {{"title", "walk the cat"}, {"completed", true}});
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.json()["title"], "walk the cat");
  EXPECT_EQ(r.json()["completed"], true);
  EXPECT_EQ(client.get(url).json()["completed"], true);
  EXPECT_EQ(client.patch(url, {{"order", 95}}).json()["order"], 95);
  EXPECT_EQ(client.patch(url, {{"completed", false}}).json()["completed"], false);

  EXPECT_EQ(client.del(url).status, 204u);
  list = client.get(base).json();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["id"], second["id"]);
}

} // namespace

TEST_F(todo_server, follows_the_todo_backend_spec) {
  http_client client{gw.port()};
  follow_todo_backend_spec(client, root(), "/todos");
}

TEST_F(todo_server, unknown_todos_are_404_and_bad_bodies_4xx) {
  http_client client{gw.port()};
  EXPECT_EQ(client.get("/todos/nope").status, 404u);
  EXPECT_EQ(client.patch("/todos/nope", {{"title", "x"}}).status, 404u);
  EXPECT_EQ(client.del("/todos/nope").status, 404u);
  auto r = client.request("POST", "/todos", "{not json");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.json()["error"], "malformed_json");
  r = client.post("/todos", {{"order", 1}});
  EXPECT_EQ(r.status, 422u);
  EXPECT_EQ(r.json()["error"], "missing_field");
  r = client.post("/todos", {{"title", "x"}, {"completed", "yes"}});
  EXPECT_EQ(r.status, 422u);
  EXPECT_EQ(r.json()["error"], "invalid_field");
  r = client.post("/todos", {{"title", "   "}});
  EXPECT_EQ(r.status, 422u);
  EXPECT_EQ(r.json()["error"], "invalid_title");
  auto url = path_of(client.post("/todos", {{"title", "x"}}).json()["url"]);
  EXPECT_EQ(client.patch(url, {{"order", 1.5}}).status, 422u);
  EXPECT_EQ(client.request("PUT", url, "{}").status, 405u);
  EXPECT_EQ(client.get("/todos").json().size(), 1u); // nothing else was created
}

TEST_F(todo_server, the_events_say_what_happened) {
  http_client client{gw.port()};
  auto url = path_of(client.post("/todos", {{"title", "x"}}).json()["url"]);
  client.patch(url, {{"title", "y"}, {"completed", true}, {"order", 3}});
  client.patch(url, {{"title", "y"}}); // no change, no event
  client.patch(url, {{"completed", false}});
  client.del(url);
  std::vector<std::string> types;
  auto events = app->store().read_all(0, 100);
  ASSERT_TRUE(events);
  for (auto& e : *events)
    types.push_back(e.type);
  EXPECT_EQ(types, (std::vector<std::string>{"todo.created", "todo.title_changed", "todo.completed",
                                             "todo.order_changed", "todo.uncompleted", "todo.deleted"}));
}

// -- the server as a process --------------------------------------------------------

TEST(todo_server_process, killed_and_restarted_it_keeps_every_acknowledged_todo) {
  sourcery::testing::temp_dir dir;
  auto start = [&] {
    auto p = std::make_unique<sourcery::testing::child_process>(
      TODO_SERVER_PATH, std::vector<std::string>{"--port", "0", "--address", "127.0.0.1", "--data-dir", dir.str()});
    auto line = p->read_line(); // "todo-server: listening on http://127.0.0.1:PORT/todos (…)"
    auto at = line.find("127.0.0.1:");
    EXPECT_NE(at, std::string::npos) << line;
    auto port = static_cast<uint16_t>(std::stoi(line.substr(at + 10)));
    return std::make_pair(std::move(p), port);
  };
  auto [server, port] = start();
  std::mutex mtx;
  std::map<std::string, std::string> acknowledged; // id -> title
  std::atomic<bool> go{true};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c, port = port] {
      try {
        http_client client{port};
        for (int i = 0; go.load(); ++i) {
          auto title = "todo " + std::to_string(c) + "/" + std::to_string(i);
          auto r = client.post("/todos", {{"title", title}});
          if (r.status == 201) {
            std::lock_guard guard{mtx};
            acknowledged[r.json()["id"]] = title;
          }
        }
      } catch (const std::exception&) {
        // the server was killed mid-request: that todo was not acknowledged
      }
    });
  }
  auto until = std::chrono::steady_clock::now() + 60s; // a server that stops answering fails the test, not hangs it
  bool enough = false;
  while (!enough && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
    std::lock_guard guard{mtx};
    enough = acknowledged.size() >= 200;
  }
  EXPECT_TRUE(enough) << "200 todos were not acknowledged within 60 s";
  server->signal(SIGKILL);
  EXPECT_EQ(server->wait(), 128 + SIGKILL);
  go = false;
  for (auto& t : clients)
    t.join();

  auto [again, port2] = start();
  http_client client{port2};
  auto list = client.get("/todos").json();
  std::map<std::string, std::string> served;
  for (auto& t : list)
    served[t["id"]] = t["title"];
  for (auto& [id, title] : acknowledged) {
    ASSERT_TRUE(served.count(id)) << "acknowledged todo " << id << " is lost";
    EXPECT_EQ(served[id], title);
  }
  EXPECT_GE(served.size(), acknowledged.size());
  again->signal(SIGTERM);
  EXPECT_EQ(again->wait(), 0); // a graceful stop
}

// -- hostile input against the server as a process -------------------------------------

namespace {

/// A todo-server child on a fresh port.
struct server_process {
  std::unique_ptr<sourcery::testing::child_process> p;
  uint16_t port = 0;

  explicit server_process(const std::string& data_dir) {
    p = std::make_unique<sourcery::testing::child_process>(
      TODO_SERVER_PATH, std::vector<std::string>{"--port", "0", "--address", "127.0.0.1", "--data-dir", data_dir});
    auto line = p->read_line();
    auto at = line.find("127.0.0.1:");
    EXPECT_NE(at, std::string::npos) << line;
    if (at != std::string::npos)
      port = static_cast<uint16_t>(std::stoi(line.substr(at + 10)));
  }
};

/// The status code of a raw HTTP answer ("HTTP/1.1 400 …"), 0 if none came.
unsigned status_of(const std::string& answer) {
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || answer.size() < 12)
    return 0;
  return static_cast<unsigned>(std::stoi(answer.substr(9, 3)));
}

} // namespace

TEST(todo_server_process, paths_and_hosts_that_are_not_utf8_get_400_and_the_server_lives) {
  sourcery::testing::temp_dir dir;
  server_process server{dir.str()};
  ASSERT_NE(server.port, 0);
  auto ask = [&](const std::string& request_line, const std::string& host = "127.0.0.1") {
    return sourcery::test::raw_exchange(server.port, request_line + "\r\nHost: " + host
                                                       + "\r\nContent-Type: application/json\r\nContent-Length: 2"
                                                         "\r\nConnection: close\r\n\r\n{}",
                                        2s);
  };
  for (const char* line : {"GET /%FF HTTP/1.1", "PUT /todos/%FF HTTP/1.1", "GET /caf%E9 HTTP/1.1",
                           "PATCH /todos/%C0%80 HTTP/1.1", "GET /todos?x=%FF HTTP/1.1", "GET /\xff HTTP/1.1"}) {
    auto answer = ask(line);
    EXPECT_EQ(status_of(answer), 400u) << line << " -> " << answer.substr(0, 80);
  }
  // A Host that is not a host name: refused before any command runs, so a
  // write is never stored behind a 500 (which a client would retry).
  for (int i = 0; i < 15; ++i) {
    auto answer = ask("POST /todos HTTP/1.1", "caf\xe9.example");
    EXPECT_EQ(status_of(answer), 400u) << answer.substr(0, 80);
  }
  http_client client{server.port};
  EXPECT_EQ(client.get("/todos").json().size(), 0u) << "a refused request stored a todo";
  auto health = client.get("/health");
  EXPECT_EQ(health.status, 200u) << health.body;
  EXPECT_EQ(client.post("/todos", {{"title", "still here"}}).status, 201u);
  server.p->signal(SIGTERM);
  EXPECT_EQ(server.p->wait(), 0);
}

TEST_F(todo_server, an_order_past_int64_is_refused_not_wrapped) {
  http_client client{gw.port()};
  auto r = client.request("POST", "/todos", R"({"title": "x", "order": 9223372036854775808})");
  EXPECT_EQ(r.status, 422u);
  EXPECT_EQ(r.json()["error"], "invalid_field");
  r = client.request("POST", "/todos", R"({"title": "x", "order": -9223372036854775809})");
  EXPECT_EQ(r.status, 422u) << r.body; // parsed as a double: not an integer
  r = client.request("POST", "/todos", R"({"title": "x", "order": 9223372036854775807})");
  ASSERT_EQ(r.status, 201u);
  EXPECT_EQ(r.json()["order"], INT64_MAX);
}

TEST(todo_server_process, a_second_server_on_one_data_directory_is_refused) {
  sourcery::testing::temp_dir dir;
  server_process first{dir.str()};
  ASSERT_NE(first.port, 0);
  auto err_file = dir.str() + ".second.stderr";
  sourcery::testing::child_process second{
    TODO_SERVER_PATH, {"--port", "0", "--address", "127.0.0.1", "--data-dir", dir.str()}, err_file};
  EXPECT_EQ(second.read_all(), "");
  EXPECT_EQ(second.wait(), 1);
  std::ifstream in{err_file};
  std::string errors{std::istreambuf_iterator<char>{in}, {}};
  EXPECT_NE(errors.find("store_in_use"), std::string::npos) << errors;
  http_client client{first.port};
  EXPECT_EQ(client.post("/todos", {{"title", "the first one still serves"}}).status, 201u);
  // The admin tool refuses to rebuild the read model under a running server.
  sourcery::testing::child_process rebuild{TODO_SERVER_PATH, {"admin", "rebuild", "todos", "--data-dir", dir.str()},
                                           err_file};
  rebuild.read_all();
  EXPECT_EQ(rebuild.wait(), 1);
  std::ifstream again{err_file};
  std::string rebuild_errors{std::istreambuf_iterator<char>{again}, {}};
  EXPECT_NE(rebuild_errors.find("store_in_use"), std::string::npos) << rebuild_errors;
}

namespace {

/// CPU time (user + system) a process has used, in clock ticks.
long cpu_ticks(pid_t pid) {
  std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
  std::string all{std::istreambuf_iterator<char>{stat}, {}};
  auto close = all.rfind(')');
  std::istringstream rest{all.substr(close + 2)};
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14)
      utime = std::stol(field);
    if (i == 15)
      stime = std::stol(field);
  }
  return utime + stime;
}

} // namespace

TEST(todo_server_process, out_of_file_descriptors_it_waits_instead_of_spinning_then_serves_again) {
  sourcery::testing::temp_dir dir;
  // A low descriptor limit: a few dozen connections exhaust it.
  sourcery::testing::child_process server{
    "/bin/sh",
    {"-c", std::string{"ulimit -n 64 && exec "} + TODO_SERVER_PATH + " --port 0 --address 127.0.0.1 --data-dir "
             + dir.str()}};
  auto line = server.read_line();
  auto at = line.find("127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << line;
  auto port = static_cast<uint16_t>(std::stoi(line.substr(at + 10)));
  boost::asio::io_context io;
  std::vector<std::unique_ptr<boost::asio::ip::tcp::socket>> held;
  for (int i = 0; i < 100; ++i) { // the listen backlog takes what accept cannot
    auto s = std::make_unique<boost::asio::ip::tcp::socket>(io);
    boost::system::error_code ec;
    s->connect({boost::asio::ip::make_address("127.0.0.1"), port}, ec);
    if (!ec)
      held.push_back(std::move(s));
  }
  // It has met EMFILE once its descriptors are all open (64, the limit).
  auto open_descriptors = [&] {
    std::error_code ec;
    auto it = std::filesystem::directory_iterator{"/proc/" + std::to_string(server.pid()) + "/fd", ec};
    return ec ? 0 : static_cast<int>(std::distance(it, std::filesystem::directory_iterator{}));
  };
  ASSERT_TRUE(sourcery::testing::eventually([&] { return open_descriptors() >= 64; }, 10s)) << open_descriptors();
  auto before = cpu_ticks(server.pid());
  std::this_thread::sleep_for(1s); // the window the CPU is measured over, not a wait for a condition
  auto used = cpu_ticks(server.pid()) - before;
  EXPECT_LT(used, 20) << "the accept loop spins: " << used << " ticks in 1 s";
  held.clear(); // descriptors free again: it serves within its accept retry
  EXPECT_TRUE(sourcery::testing::eventually(
    [&] {
      try {
        http_client client{port};
        client.set_timeout(2s);
        return client.get("/health").status == 200u;
      } catch (const std::exception&) {
        return false; // not yet accepted
      }
    },
    10s));
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
}

TEST(todo_server_process, a_full_disk_is_507_with_reads_served_and_writes_resume_once_space_is_freed) {
  sourcery::testing::small_filesystem fs{16};
  ASSERT_EQ(fs.error(), "");
  auto data = (fs / "todo-data").string();
  {
    // Full before it starts: a clear failure, not SIGBUS.
    fs.fill();
    auto err_file = fs.str() + "/../full.stderr";
    sourcery::testing::child_process refused{
      TODO_SERVER_PATH, {"--port", "0", "--address", "127.0.0.1", "--data-dir", data}, err_file};
    refused.read_all();
    EXPECT_EQ(refused.wait(), 1);
    std::ifstream in{err_file};
    std::string errors{std::istreambuf_iterator<char>{in}, {}};
    EXPECT_NE(errors.find("store_full"), std::string::npos) << errors;
    fs.free_filler();
    std::filesystem::remove_all(data);
  }
  server_process server{data};
  ASSERT_NE(server.port, 0);
  http_client client{server.port};
  ASSERT_EQ(client.post("/todos", {{"title", "before"}}).status, 201u);
  fs.fill();
  // Writes fail with 507 (the event store or the read model has no room);
  // every answer is a clear one, and the process lives on.
  unsigned status = 0;
  for (int i = 0; i < 50 && status != 507; ++i)
    status = client.post("/todos", {{"title", std::string(900, 'x')}}).status;
  EXPECT_EQ(status, 507u);
  auto list = client.get("/todos");
  EXPECT_EQ(list.status, 200u) << "reads are served";
  fs.free_filler();
  // Space again: writes resume without a restart (the projection retries
  // with backoff, at most 5 s apart).
  status = 0;
  for (int i = 0; i < 100 && status != 201; ++i) {
    status = client.post("/todos", {{"title", "after"}}).status;
    if (status != 201)
      std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(status, 201u);
  EXPECT_EQ(client.get("/health").status, 200u);
  server.p->signal(SIGTERM);
  EXPECT_EQ(server.p->wait(), 0);
}

// On PostgreSQL the todo list is a table any SQL client reads, and
// `todo-server admin rebuild todos` rebuilds it.
TEST(todo_server_process, on_postgres_the_list_is_a_sql_table_that_admin_rebuild_rebuilds) {
  sourcery::testing::temp_dir dir;
  auto schema = sourcery::testing::test_schema(dir);
  auto uri = sourcery::testing::init_test_store(sourcery::testing::test_pg_uri() + "&schema=" + schema);
  auto start = [&] {
    auto p = std::make_unique<sourcery::testing::child_process>(
      TODO_SERVER_PATH, std::vector<std::string>{"--port", "0", "--address", "127.0.0.1", "--store", uri});
    auto line = p->read_line();
    auto at = line.find("127.0.0.1:");
    EXPECT_NE(at, std::string::npos) << line;
    auto port = static_cast<uint16_t>(std::stoi(line.substr(at + 10)));
    return std::make_pair(std::move(p), port);
  };
  auto [server, port] = start();
  std::string first_id;
  {
    http_client client{port};
    auto a = client.post("/todos", {{"title", "buy milk"}, {"order", 2}});
    ASSERT_EQ(a.status, 201);
    first_id = a.json()["id"];
    ASSERT_EQ(client.post("/todos", {{"title", "walk the dog"}}).status, 201);
    ASSERT_EQ(client.patch("/todos/" + first_id, {{"completed", true}}).status, 200);
    auto list = client.get("/todos").json();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0]["title"], "buy milk");
    EXPECT_EQ(list[0]["completed"], true);
    EXPECT_EQ(list[0]["order"], 2);
  }
  auto table = [&] {
    return sourcery::testing::run_sql(sourcery::testing::test_pg_uri(),
                                      "SELECT string_agg(title || ':' || completed || ':' || coalesce(\"order\"::text, '-'),"
                                      " ',' ORDER BY created) FROM " + schema + ".todos");
  };
  EXPECT_EQ(table(), "buy milk:true:2,walk the dog:false:-");
  server->signal(SIGTERM);
  EXPECT_EQ(server->wait(), 0);

  sourcery::testing::run_sql(sourcery::testing::test_pg_uri(), "UPDATE " + schema + ".todos SET title = 'garbage'");
  sourcery::testing::child_process rebuild{TODO_SERVER_PATH, {"admin", "rebuild", "todos", "--store", uri}};
  auto out = rebuild.read_all();
  EXPECT_EQ(rebuild.wait(), 0) << out;
  EXPECT_EQ(table(), "buy milk:true:2,walk the dog:false:-");

  auto [again, port2] = start();
  http_client client{port2};
  auto list = client.get("/todos").json();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1]["title"], "walk the dog");
  // The rebuild keyed the rows by the todos' ids, not their stream ids.
  EXPECT_EQ(list[0]["id"], first_id);
  EXPECT_EQ(client.get("/todos/" + first_id).json()["title"], "buy milk");
  again->signal(SIGTERM);
  EXPECT_EQ(again->wait(), 0);
}

// A rebuild while the server writes (the operator's `admin rebuild` beside
// a running application on PostgreSQL) replaces the read model in one
// transaction: every round, once the writes stop, the table holds one row
// per todo stream, and the projection's checkpoint is the head.
TEST(todo_server_process, rebuilds_during_writes_lose_no_row_on_postgres) {
  sourcery::testing::temp_dir dir;
  auto schema = sourcery::testing::test_schema(dir);
  auto uri = sourcery::testing::init_test_store(sourcery::testing::test_pg_uri() + "&schema=" + schema);
  sourcery::testing::child_process server{TODO_SERVER_PATH,
                                          {"--port", "0", "--address", "127.0.0.1", "--store", uri}};
  auto line = server.read_line();
  auto at = line.find("127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << line;
  auto port = static_cast<uint16_t>(std::stoi(line.substr(at + 10)));
  auto sql = [&](const std::string& q) { return sourcery::testing::run_sql(sourcery::testing::test_pg_uri(), q); };
  int created = 0;
  for (int round = 0; round < 3; ++round) {
    std::atomic<int> posted{0};
    std::atomic<bool> failed{false}, written{false};
    std::thread writer{[&] {
      http_client client{port};
      for (int i = 0; i < 100; ++i) {
        auto r = client.post("/todos", {{"title", "todo " + std::to_string(round) + "." + std::to_string(i)}});
        if (r.status != 201)
          failed = true;
        else
          ++posted;
      }
      written = true;
    }};
    // Rebuilds one after another for as long as the writes go on (at least three).
    std::atomic<bool> writing{true};
    for (int k = 0; k < 3 || writing.load(); ++k) {
      sourcery::testing::child_process rebuild{TODO_SERVER_PATH, {"admin", "rebuild", "todos", "--store", uri}};
      auto out = rebuild.read_all();
      EXPECT_EQ(rebuild.wait(), 0) << out; // not ASSERT: the writer thread is still to be joined
      EXPECT_NE(out.find("rebuilt todos up to position"), std::string::npos) << out;
      writing = !written.load();
    }
    writer.join();
    ASSERT_FALSE(failed.load());
    created += posted.load();
    auto streams = [&] {
      return std::stoi(sql("SELECT count(*) FROM " + schema + ".streams WHERE encode(stream_id, 'escape') LIKE 'todo-%'"));
    };
    ASSERT_EQ(streams(), created);
    // The projection catches up; then the table and the list hold every todo.
    auto deadline = std::chrono::steady_clock::now() + 30s;
    std::string rows, checkpoint, head;
    while (std::chrono::steady_clock::now() < deadline) {
      rows = sql("SELECT count(*) FROM " + schema + ".todos");
      checkpoint = sql("SELECT position FROM " + schema + ".read_model_checkpoints WHERE projection = convert_to('todos', 'UTF8')");
      head = sql("SELECT position FROM " + schema + ".log_head");
      if (checkpoint == head)
        break;
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_EQ(checkpoint, head) << "round " << round;
    EXPECT_EQ(std::stoi(rows), created) << "round " << round << ": the read model lost rows";
    http_client client{port};
    EXPECT_EQ(client.get("/todos").json().size(), static_cast<size_t>(created));
  }
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
}

// A database frozen under the server (SIGSTOP): requests are answered 503
// or 504 within the store's operation timeout, never hang; after SIGCONT the
// server serves again, with nothing lost.
TEST(todo_server_process, a_frozen_database_is_a_bounded_5xx_and_the_server_recovers) {
  sourcery::testing::private_server db{SOURCERY_PG_SCRIPT};
  sourcery::testing::child_process server{
    TODO_SERVER_PATH, {"--port", "0", "--address", "127.0.0.1", "--store", sourcery::testing::init_test_store(db.uri() + "&operation_timeout=1")}};
  auto line = server.read_line();
  auto at = line.find("127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << line;
  auto port = static_cast<uint16_t>(std::stoi(line.substr(at + 10)));
  http_client client{port};
  auto created = client.post("/todos", {{"title", "before the freeze"}});
  ASSERT_EQ(created.status, 201);

  db.pause();
  for (auto* what : {"GET", "POST"}) {
    auto t0 = std::chrono::steady_clock::now();
    http_client c{port};
    auto r = std::string{what} == "GET" ? c.get("/todos") : c.post("/todos", {{"title", "during the freeze"}});
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_TRUE(r.status == 503 || r.status == 504) << what << " " << r.status << " " << r.body;
    EXPECT_LT(took, 8s) << what << " must not hang on a frozen database";
  }
  db.resume();

  nlohmann::json list;
  for (int i = 0; i < 100; ++i) {
    http_client c{port};
    auto r = c.get("/todos");
    if (r.status == 200) {
      list = r.json();
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(list.is_array()) << "the server serves again after SIGCONT";
  bool found = false;
  for (auto& t : list)
    found |= t["title"] == "before the freeze";
  EXPECT_TRUE(found);
  int status = 0;
  for (int i = 0; i < 50 && status != 201; ++i) {
    http_client c{port};
    status = c.post("/todos", {{"title", "after the freeze"}}).status;
    if (status != 201)
      std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(status, 201);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 0);
}

namespace {

/// `count` todo-servers as nodes of cluster "todo" on `uri` (with `extra`
/// arguments), each on a free HTTP port: their processes and ports (empty
/// ports if one did not say where it listens).
struct todo_nodes {
  std::vector<std::unique_ptr<sourcery::testing::child_process>> processes;
  std::vector<uint16_t> ports;
};
todo_nodes start_todo_nodes(int count, const std::string& uri, const std::string& logs,
                            std::vector<std::string> extra = {}) {
  todo_nodes out;
  for (int i = 0; i < count; ++i) {
    std::vector<std::string> args{"--port", "0", "--address", "127.0.0.1", "--store", uri, "--cluster", "todo",
                                  "--node", "127.0.0.1:" + std::to_string(sourcery::testing::free_port())};
    args.insert(args.end(), extra.begin(), extra.end());
    out.processes.push_back(std::make_unique<sourcery::testing::child_process>(
      TODO_SERVER_PATH, args, logs + "/node" + std::to_string(i) + ".log"));
    auto line = out.processes.back()->read_line();
    auto at = line.find("127.0.0.1:");
    if (at == std::string::npos) {
      ADD_FAILURE() << "node " << i << " did not start: " << line;
      return {std::move(out.processes), {}};
    }
    out.ports.push_back(static_cast<uint16_t>(std::stoi(line.substr(at + 10))));
  }
  return out;
}

} // namespace

// Three todo-servers as one cluster on one PostgreSQL store serve one todo
// list: a todo created through one node reads through any other right
// after its 201 (strong consistency across nodes: the projection runs on
// one of them), and the list stays one SQL table.
TEST(todo_server_process, three_nodes_serve_one_list_and_read_their_writes_through_any_node) {
  sourcery::testing::temp_dir dir;
  auto schema = sourcery::testing::test_schema(dir);
  auto uri = sourcery::testing::init_test_store(sourcery::testing::test_pg_uri() + "&schema=" + schema);
  auto started = start_todo_nodes(3, uri, dir.str());
  auto& nodes = started.processes;
  auto& ports = started.ports;
  ASSERT_EQ(ports.size(), 3u);
  std::vector<std::unique_ptr<http_client>> clients;
  for (auto p : ports)
    clients.push_back(std::make_unique<http_client>(p));
  std::vector<std::string> ids;
  for (int i = 0; i < 9; ++i) {
    auto& writer = *clients[static_cast<size_t>(i) % 3];
    auto& reader = *clients[static_cast<size_t>(i + 1) % 3];
    auto created = writer.post("/todos", {{"title", "todo " + std::to_string(i)}});
    ASSERT_EQ(created.status, 201) << created.body;
    std::string id = created.json()["id"];
    ids.push_back(id);
    auto read = reader.get("/todos/" + id);
    ASSERT_EQ(read.status, 200) << "created through node " << i % 3 << ", read through node " << (i + 1) % 3;
    EXPECT_EQ(read.json()["title"], "todo " + std::to_string(i));
    auto patched = reader.patch("/todos/" + id, {{"completed", true}});
    ASSERT_EQ(patched.status, 200) << patched.body;
    EXPECT_EQ((*clients[static_cast<size_t>(i + 2) % 3]).get("/todos/" + id).json()["completed"], true);
  }
  for (auto& c : clients)
    EXPECT_EQ(c->get("/todos").json().size(), 9u);
  EXPECT_EQ(sourcery::testing::run_sql(sourcery::testing::test_pg_uri(),
                                       "SELECT count(*) FROM " + schema + ".todos WHERE completed"),
            "9");
  for (auto& n : nodes)
    n->signal(SIGTERM);
  for (auto& n : nodes)
    EXPECT_EQ(n->wait(), 0);
}

// todo-server --tenants: the spec passes at two tenants' roots at once, and
// each sees only its own todos, in its own store.
TEST(todo_server_process, the_spec_passes_at_two_tenants_roots_at_once) {
  sourcery::testing::temp_dir dir;
  auto data = (dir / "todo-data").string();
  sourcery::testing::child_process p{
    TODO_SERVER_PATH, {"--port", "0", "--address", "127.0.0.1", "--data-dir", data, "--tenants"}};
  auto line = p.read_line();
  auto at = line.find("127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << line;
  auto port = static_cast<uint16_t>(std::stoi(line.substr(at + 10)));
  auto origin = "http://127.0.0.1:" + std::to_string(port);
  std::thread other{[&] {
    http_client client{port};
    follow_todo_backend_spec(client, origin, "/globex/todos");
  }};
  {
    http_client client{port};
    follow_todo_backend_spec(client, origin, "/acme/todos");
  }
  other.join();
  http_client client{port};
  auto acme = client.get("/acme/todos").json();
  auto globex = client.get("/globex/todos").json();
  ASSERT_EQ(acme.size(), 1u);
  ASSERT_EQ(globex.size(), 1u);
  EXPECT_NE(acme[0]["id"], globex[0]["id"]);
  EXPECT_EQ(client.get("/acme/todos/" + globex[0]["id"].get<std::string>()).status, 404u) << "not acme's";
  // Only a POST makes a tenant: the reads (and the deletes) of one never
  // created answer as an empty list would, and make nothing on disk.
  EXPECT_EQ(client.get("/initech/todos").json(), json::array()) << "a new tenant starts empty";
  EXPECT_EQ(client.get("/initech/todos/x1").status, 404u);
  EXPECT_EQ(client.del("/initech/todos").status, 204u);
  EXPECT_EQ(client.del("/initech/todos/x1").status, 404u);
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path{data} / "tenants" / "initech"))
    << "reads of a tenant never created made its store";
  for (const std::string& bad : std::vector<std::string>{"/Acme/todos", "/a_b/todos", "/" + std::string(41, 'a') + "/todos"}) {
    auto r = client.get(bad);
    EXPECT_EQ(r.status, 404u) << bad;
    EXPECT_EQ(r.json()["error"], "not_found") << bad << " " << r.body;
  }
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path{data} / "tenants" / "acme" / "data.mdb"));
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path{data} / "tenants" / "globex" / "data.mdb"));
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(), 0);
}

// todo-server --tenants --cluster: two servers on one PostgreSQL database
// share one cluster for every tenant. The spec passes at two tenants' roots
// at once, each through another server, and each tenant's list reads the
// same through either server: its todos' commands ran on their shards'
// owners, its projection on one of the two.
TEST(todo_server_process, two_nodes_of_tenants_serve_each_tenant_through_either_node) {
  sourcery::testing::temp_dir dir;
  auto schema = sourcery::testing::test_schema(dir);
  auto uri = sourcery::testing::init_test_store(sourcery::testing::test_pg_uri() + "&schema=" + schema);
  auto suffix = std::to_string(std::hash<std::string>{}(dir.str()) % 100000);
  const std::string acme = "acme-" + suffix, globex = "globex-" + suffix;
  auto started = start_todo_nodes(2, uri, dir.str(), {"--tenants"});
  auto& nodes = started.processes;
  auto& ports = started.ports;
  ASSERT_EQ(ports.size(), 2u);
  http_client first{ports[0]}, second{ports[1]};
  ASSERT_TRUE(sourcery::testing::eventually([&] { return second.get("/health").json()["members"] == 2; },
                                            std::chrono::seconds{20}))
    << second.get("/health").body;
  std::thread other{[&] {
    http_client client{ports[1]};
    follow_todo_backend_spec(client, "http://127.0.0.1:" + std::to_string(ports[1]), "/" + globex + "/todos");
  }};
  follow_todo_backend_spec(first, "http://127.0.0.1:" + std::to_string(ports[0]), "/" + acme + "/todos");
  other.join();
  for (int i = 0; i < 8; ++i) { // more todos, across the shards of both nodes
    auto& writer = i % 2 ? first : second;
    ASSERT_EQ(writer.post("/" + acme + "/todos", {{"title", "more " + std::to_string(i)}}).status, 201u);
  }
  for (auto* client : {&first, &second}) {
    auto a = client->get("/" + acme + "/todos").json();
    auto g = client->get("/" + globex + "/todos").json();
    EXPECT_EQ(a.size(), 9u) << a.dump();
    EXPECT_EQ(g.size(), 1u) << g.dump();
    for (auto& todo : a)
      EXPECT_NE(todo["id"], g[0]["id"]) << "acme's list holds none of globex's";
  }
  auto h0 = first.get("/health").json(), h1 = second.get("/health").json();
  EXPECT_EQ(h0["shards_owned"].get<int>() + h1["shards_owned"].get<int>(), 64) << h0.dump() << h1.dump();
  EXPECT_EQ(sourcery::testing::run_sql(sourcery::testing::test_pg_uri(),
                                       "SELECT count(DISTINCT split_part(owner, '#', 1)) FROM tenant_acme_" + suffix
                                         + ".cluster_writes"),
            "2")
    << "acme's commands ran on both nodes";
  // The first node killed: the second takes its shards, for every tenant,
  // and serves each of acme's todos (its projection too, if it ran there).
  nodes[0]->signal(SIGKILL);
  nodes[0]->wait();
  auto todos = second.get("/" + acme + "/todos").json();
  for (auto& todo : todos) {
    auto path = "/" + acme + "/todos/" + todo["id"].get<std::string>();
    ASSERT_TRUE(sourcery::testing::eventually([&] { return second.patch(path, {{"completed", true}}).status == 200u; },
                                              std::chrono::seconds{30}))
      << path;
  }
  for (auto& todo : second.get("/" + acme + "/todos").json())
    EXPECT_EQ(todo["completed"], true) << todo.dump();
  nodes[1]->signal(SIGTERM);
  EXPECT_EQ(nodes[1]->wait(), 0);
  for (auto* t : {"acme_", "globex_"})
    sourcery::testing::run_sql(sourcery::testing::test_pg_uri(),
                               "DROP SCHEMA IF EXISTS tenant_" + std::string{t} + suffix + " CASCADE");
}

TEST(todo_server_process, serves_https_with_its_certificate_and_operations_on_their_own_address) {
  sourcery::testing::temp_dir dir;
  sourcery::testing::test_ca ca{dir.str(), "todo"};
  auto cert = ca.issue("todo-server");
  auto ops_port = sourcery::testing::free_port();
  sourcery::testing::child_process p{
    TODO_SERVER_PATH,
    {"--port", "0", "--address", "127.0.0.1", "--data-dir", (dir / "data").string(), "--tls-cert", cert.cert,
     "--tls-key", cert.key, "--operations", "127.0.0.1:" + std::to_string(ops_port)}};
  auto line = p.read_line();
  auto at = line.find("https://127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << line;
  auto port = static_cast<uint16_t>(std::stoi(line.substr(at + 18)));
  EXPECT_NE(p.read_line().find("operations on https://127.0.0.1:" + std::to_string(ops_port)), std::string::npos);
  {
    http_client client{port, "127.0.0.1", ca.cert()};
    follow_todo_backend_spec(client, "https://127.0.0.1:" + std::to_string(port), "/todos");
    EXPECT_EQ(client.get("/health").status, 404u) << "operations are served at their own address only";
    EXPECT_EQ(client.get("/metrics").status, 404u);
  }
  http_client operations{ops_port, "127.0.0.1", ca.cert()};
  auto health = operations.get("/health");
  EXPECT_EQ(health.status, 200u) << health.body;
  EXPECT_EQ(health.json()["status"], "ok");
  auto metrics = operations.get("/metrics");
  EXPECT_EQ(metrics.status, 200u);
  EXPECT_NE(metrics.body.find("sourcery_http_requests_total"), std::string::npos) << metrics.body.substr(0, 300);
  EXPECT_EQ(operations.get("/todos").status, 404u) << "the API is not served at the operations address";
  EXPECT_NE(sourcery::test::raw_exchange(port, "GET /todos HTTP/1.1\r\nHost: x\r\n\r\n", 5s).find("HTTP/1.1"), 0u)
    << "plain HTTP is not served beside HTTPS";
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(), 0);
}

TEST(todo_server_process, tls_options_that_do_not_make_a_server_are_refused_with_one_line) {
  sourcery::testing::temp_dir dir;
  sourcery::testing::test_ca ca{dir.str(), "todo"};
  auto a = ca.issue("a");
  auto b = ca.issue("b");
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--port", "0", "--data-dir", (dir / "data").string()});
    auto err = (dir / "stderr").string();
    sourcery::testing::child_process p{TODO_SERVER_PATH, args, err};
    p.read_all();
    int status = p.wait();
    std::ifstream in{err};
    std::stringstream text;
    text << in.rdbuf();
    return std::make_pair(status, text.str());
  };
  auto [mismatch, why] = run({"--tls-cert", a.cert, "--tls-key", b.key});
  EXPECT_EQ(mismatch, 1);
  EXPECT_NE(why.find("does not match"), std::string::npos) << why;
  auto [half, half_why] = run({"--tls-cert", a.cert});
  EXPECT_EQ(half, 2) << half_why;
  EXPECT_NE(half_why.find("--tls-key"), std::string::npos) << half_why;
  auto [ca_alone, ca_why] = run({"--tls-cert", a.cert, "--tls-key", a.key, "--tls-ca", ca.cert()});
  EXPECT_EQ(ca_alone, 2) << ca_why; // the cluster's CA, without a cluster
  EXPECT_NE(ca_why.find("--cluster"), std::string::npos) << ca_why;
}
