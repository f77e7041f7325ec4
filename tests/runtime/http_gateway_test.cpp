// The HTTP gateway through a real client over loopback: routing, errors,
// limits, timeouts, CORS, keep-alive, and the graceful stop.

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "../support/eventually.hpp"
#include "../support/http_client.hpp"
#include "../support/tree_killer.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/http/gateway.hpp"

using namespace std::chrono_literals;
using sourcery::test::http_client;
using sourcery::test::raw_exchange;
namespace http = sourcery::http;

namespace {

http::gateway_config local(http::gateway_config c = {}) {
  c.address = "127.0.0.1";
  c.port = 0;
  return c;
}

/// A gateway with a few routes of every kind.
struct gateway_fixture : ::testing::Test {
  http::gateway gw;
  std::atomic<int> slow_started{0};

  void start(http::gateway_config c = {}) {
    gw.route("GET", "/items/{id}", [](http::request& req, http::responder answer) {
      answer(http::json_response(200, {{"id", req.param("id")}, {"q", req.query["q"]}, {"host", req.origin()}}));
    });
    gw.route("POST", "/items", [](http::request& req, http::responder answer) {
      auto body = http::json_object_body(req);
      if (!body)
        return answer(body.err());
      auto name = http::required_field<std::string>(*body, "name");
      if (!name)
        return answer(name.err());
      answer(http::json_response(201, {{"name", *name}}));
    });
    gw.route("GET", "/later", [](http::request&, http::responder answer) {
      std::thread{[answer] {
        std::this_thread::sleep_for(20ms);
        answer(http::json_response(200, {{"later", true}}));
      }}.detach();
    });
    gw.route("GET", "/slow", [this](http::request&, http::responder answer) {
      ++slow_started;
      std::thread{[answer] {
        std::this_thread::sleep_for(300ms);
        answer(http::json_response(200, {{"slow", true}}));
      }}.detach();
    });
    gw.route("GET", "/lost", [](http::request&, http::responder) {});
    gw.route("GET", "/throws", [](http::request&, http::responder) -> void { throw std::runtime_error{"boom"}; });
    ASSERT_FALSE(gw.start(local(c)));
  }
};

} // namespace

TEST_F(gateway_fixture, routes_with_parameters_and_decoded_queries) {
  start();
  http_client client{gw.port()};
  auto r = client.get("/items/a%20b?q=x+y%21");
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.json()["id"], "a b");
  EXPECT_EQ(r.json()["q"], "x y!");
  EXPECT_EQ(r.json()["host"], "http://127.0.0.1:" + std::to_string(gw.port()));
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("access-control-allow-origin"), "*");
  EXPECT_EQ(client.get("/items/7/").json()["id"], "7"); // a trailing slash names the same resource
}

TEST_F(gateway_fixture, unknown_paths_are_404_and_wrong_methods_405_with_allow) {
  start();
  http_client client{gw.port()};
  auto r = client.get("/nothing/here");
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(r.json()["error"], "not_found");
  EXPECT_EQ(r.header("access-control-allow-origin"), "*");
  r = client.request("DELETE", "/items/1");
  EXPECT_EQ(r.status, 405u);
  EXPECT_EQ(r.json()["error"], "method_not_allowed");
  EXPECT_EQ(r.header("allow"), "GET, HEAD, OPTIONS");
}

TEST_F(gateway_fixture, head_has_the_get_headers_without_a_body) {
  start();
  http_client client{gw.port()};
  auto get = client.get("/items/1");
  auto head = client.request("HEAD", "/items/1");
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.header("content-length"), get.header("content-length"));
  EXPECT_TRUE(head.body.empty());
  EXPECT_EQ(client.get("/items/2").status, 200u); // the connection is still in step
}

TEST_F(gateway_fixture, options_answers_a_cors_preflight) {
  start();
  http_client client{gw.port()};
  auto r = client.request("OPTIONS", "/items", {},
                          {{"Origin", "http://example.com"},
                           {"Access-Control-Request-Method", "POST"},
                           {"Access-Control-Request-Headers", "content-type, x-trace"}});
  EXPECT_EQ(r.status, 204u);
  EXPECT_EQ(r.header("access-control-allow-origin"), "*");
  EXPECT_EQ(r.header("access-control-allow-methods"), "POST, OPTIONS");
  EXPECT_EQ(r.header("access-control-allow-headers"), "content-type, x-trace");
  EXPECT_EQ(r.header("allow"), "POST, OPTIONS");
  EXPECT_EQ(client.request("OPTIONS", "/nowhere").status, 404u);
}

TEST_F(gateway_fixture, bad_json_wrong_types_and_missing_fields_are_clear_4xx) {
  start();
  http_client client{gw.port()};
  auto r = client.request("POST", "/items", "{\"name\": ");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.json()["error"], "malformed_json");
  r = client.request("POST", "/items", "[1, 2]");
  EXPECT_EQ(r.status, 422u);
  EXPECT_EQ(r.json()["error"], "invalid_body");
  r = client.post("/items", {{"name", 5}});
  EXPECT_EQ(r.status, 422u);
  EXPECT_EQ(r.json()["error"], "invalid_field");
  EXPECT_NE(r.json()["message"].get<std::string>().find("name"), std::string::npos);
  r = client.post("/items", nlohmann::json::object());
  EXPECT_EQ(r.status, 422u);
  EXPECT_EQ(r.json()["error"], "missing_field");
  EXPECT_EQ(client.post("/items", {{"name", "ok"}}).status, 201u); // and the connection still serves
}

TEST_F(gateway_fixture, keeps_a_connection_alive_across_requests) {
  start();
  http_client client{gw.port()};
  for (int i = 0; i < 200; ++i) {
    auto r = client.get("/items/" + std::to_string(i));
    ASSERT_EQ(r.status, 200u);
    ASSERT_TRUE(r.keep_alive);
  }
  EXPECT_EQ(client.get("/later").json()["later"], true); // answered from another thread
}

TEST_F(gateway_fixture, an_oversized_body_is_413_and_oversized_headers_431) {
  http::gateway_config c;
  c.body_limit = 1024;
  c.header_limit = 2048;
  start(c);
  http_client client{gw.port()};
  auto r = client.post("/items", {{"name", std::string(4096, 'x')}});
  EXPECT_EQ(r.status, 413u);
  EXPECT_EQ(r.json()["error"], "payload_too_large");
  EXPECT_FALSE(r.keep_alive);
  r = client.request("GET", "/items/1", {}, {{"X-Big", std::string(4096, 'y')}});
  EXPECT_EQ(r.status, 431u);
  EXPECT_EQ(client.get("/items/1").status, 200u);
}

TEST_F(gateway_fixture, a_malformed_request_is_400_and_closed) {
  start();
  auto out = raw_exchange(gw.port(), "THIS IS NOT HTTP\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 400", 0), 0u) << out;
  EXPECT_NE(out.find("bad_request"), std::string::npos);
  out = raw_exchange(gw.port(), "GET /items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 400", 0), 0u) << out;
}

TEST_F(gateway_fixture, a_slow_request_gets_408_and_an_idle_connection_is_closed) {
  http::gateway_config c;
  c.read_timeout = 300ms;
  start(c);
  auto t0 = std::chrono::steady_clock::now();
  auto out = raw_exchange(gw.port(), "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na");
  EXPECT_EQ(out.rfind("HTTP/1.1 408", 0), 0u) << out;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  out = raw_exchange(gw.port(), "");
  EXPECT_EQ(out, ""); // closed without a word
}

TEST_F(gateway_fixture, expect_100_continue_is_honoured) {
  start();
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s{io};
  s.connect({boost::asio::ip::make_address("127.0.0.1"), gw.port()});
  std::string head = "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\nExpect: 100-continue\r\n\r\n";
  boost::asio::write(s, boost::asio::buffer(head));
  std::string got(128, '\0');
  auto n = s.read_some(boost::asio::buffer(got));
  EXPECT_EQ(got.substr(0, n).rfind("HTTP/1.1 100 Continue", 0), 0u);
  boost::asio::write(s, boost::asio::buffer(std::string{"{\"name\": \"ok\"}\n"}));
  n = s.read_some(boost::asio::buffer(got));
  EXPECT_EQ(got.substr(0, n).rfind("HTTP/1.1 201", 0), 0u) << got.substr(0, n);
}

TEST_F(gateway_fixture, a_body_that_is_not_json_is_415) {
  start();
  auto out = raw_exchange(gw.port(), "POST /items HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                                     "Content-Length: 15\r\n\r\n{\"name\": \"ok\"}\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 415", 0), 0u) << out;
  EXPECT_NE(out.find("unsupported_media_type"), std::string::npos) << out;
  out = raw_exchange(gw.port(), "POST /items HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: Application/JSON; charset=utf-8\r\n"
                                "Content-Length: 15\r\n\r\n{\"name\": \"ok\"}\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 201", 0), 0u) << out;
}

TEST_F(gateway_fixture, a_lost_responder_answers_500_and_a_throwing_route_too) {
  start();
  http_client client{gw.port()};
  auto r = client.get("/lost");
  EXPECT_EQ(r.status, 500u);
  EXPECT_EQ(r.json()["error"], "internal_error");
  r = client.get("/throws");
  EXPECT_EQ(r.status, 500u);
  EXPECT_EQ(r.json()["message"], "boom");
}

TEST_F(gateway_fixture, stop_drains_requests_in_flight_then_refuses_connections) {
  start();
  auto port = gw.port();
  auto reply = std::async(std::launch::async, [port] { return http_client{port}.get("/slow"); });
  ASSERT_TRUE(sourcery::testing::eventually([&] { return slow_started.load() > 0; }, 10s)) << "/slow never began";
  http_client idle{port};
  ASSERT_EQ(idle.get("/items/1").status, 200u); // an idle keep-alive connection
  auto t0 = std::chrono::steady_clock::now();
  gw.stop();
  auto took = std::chrono::steady_clock::now() - t0;
  auto r = reply.get();
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.json()["slow"], true);
  EXPECT_FALSE(r.keep_alive); // told to close
  EXPECT_LT(took, 5s);
  EXPECT_THROW(http_client{port}.get("/items/1"), boost::system::system_error);
}

TEST(operations_routes, health_and_prometheus_metrics) {
  sourcery::application_config config;
  config.in_memory = true;
  auto app = sourcery::application::start(config, {});
  ASSERT_TRUE(app) << sourcery::describe_error(app.error());
  http::gateway gw;
  http::add_operations_routes(gw, **app);
  auto c = local();
  c.metrics = &(*app)->metrics();
  ASSERT_FALSE(gw.start(c));
  http_client client{gw.port()};
  auto health = client.get("/health");
  EXPECT_EQ(health.status, 200u);
  EXPECT_EQ(health.json()["status"], "ok");
  auto m = client.get("/metrics");
  EXPECT_EQ(m.status, 200u);
  EXPECT_EQ(m.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  for (auto* name : {"# TYPE sourcery_commands_total counter", "sourcery_commands_total{outcome=\"accepted\"} 0",
                     "# TYPE sourcery_dispatch_latency_seconds histogram",
                     "sourcery_dispatch_latency_seconds_bucket{le=\"+Inf\"} 0", "sourcery_events_appended_total 0",
                     "sourcery_http_requests_total{code=\"2xx\"} 1", "sourcery_head_position 0",
                     "# TYPE sourcery_handler_lag_events gauge"})
    EXPECT_NE(m.body.find(name), std::string::npos) << name << "\n" << m.body;
  (*app)->stop();
  EXPECT_EQ(client.get("/health").status, 503u);
}

namespace {
struct tick {
  static constexpr const char* type_name = "test.tick";
  int n = 0;
  MSGPACK_DEFINE_MAP(n);
};
struct ticker {
  using event = std::variant<tick>;
  sourcery::outcome<event> execute(const tick& t) const { return t; }
  void apply(const tick&) {}
};
struct ticks {
  static constexpr const char* handler_name = "test.ticks";
  using event = std::variant<tick>;
  caf::error handle(const tick&, const sourcery::event_context&) { return {}; }
};
} // namespace

TEST(operations_routes, health_is_503_with_the_reason_once_the_tree_has_failed) {
  sourcery::router routes;
  routes.route<ticker, tick>([](const tick&) { return std::string{"t"}; });
  sourcery::application_config config;
  config.in_memory = true;
  auto app = sourcery::application::start(config, routes);
  ASSERT_TRUE(app) << sourcery::describe_error(app.error());
  ASSERT_TRUE((*app)->add_handler<ticks>());
  http::gateway gw;
  http::add_operations_routes(gw, **app);
  ASSERT_FALSE(gw.start(local()));
  http_client client{gw.port()};
  EXPECT_EQ(client.get("/health").status, 200u);
  sourcery::testing::kill_until_tree_fails(**app, "handler:test.ticks");
  ASSERT_TRUE((*app)->await_failure(std::chrono::seconds{5}));
  auto health = client.get("/health");
  EXPECT_EQ(health.status, 503u);
  EXPECT_EQ(health.json()["status"], "failed");
  EXPECT_NE(health.json()["reason"].get<std::string>().find("restart"), std::string::npos) << health.body;
}

TEST(gateway_stop, request_stop_from_another_thread_ends_wait_without_blocking_the_caller) {
  http::gateway gw;
  gw.route("GET", "/ping", [](http::request&, http::responder answer) { answer(http::json_response(200, {})); });
  ASSERT_FALSE(gw.start(local()));
  std::promise<void> returned;
  std::thread waiter{[&] {
    gw.wait();
    returned.set_value();
  }};
  auto t0 = std::chrono::steady_clock::now();
  gw.request_stop(); // as application_config::on_failure does, from an actor's thread
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds{50}) << "request_stop does not block";
  EXPECT_EQ(returned.get_future().wait_for(std::chrono::seconds{5}), std::future_status::ready);
  waiter.join();
}
