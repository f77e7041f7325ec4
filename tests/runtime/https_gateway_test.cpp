// The HTTP gateway over TLS (gateway_config::tls), through a real client
// that verifies the server's certificate and name: what it serves, what it
// refuses (plain HTTP, old protocols, anonymous suites, silent and
// half-finished handshakes, bad files), and that it stops on time.

#include <openssl/ssl.h>

#include <chrono>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "../support/http_client.hpp"
#include "../support/temp_dir.hpp"
#include "../support/test_ca.hpp"
#include "sourcery/actors/aggregates/command_result.hpp"
#include "sourcery/runtime/http/gateway.hpp"

using namespace std::chrono_literals;
using sourcery::test::http_client;
using sourcery::test::raw_exchange;
namespace http = sourcery::http;
namespace ssl = boost::asio::ssl;

namespace https_tests {

/// A gateway on loopback serving HTTPS with a certificate of a throwaway CA.
struct https_fixture : ::testing::Test {
  sourcery::testing::temp_dir dir;
  sourcery::testing::test_ca ca{dir.str(), "web"};
  sourcery::testing::test_ca::issued server = ca.issue("server");
  http::gateway gw;

  http::gateway_config config() {
    http::gateway_config c;
    c.address = "127.0.0.1";
    c.port = 0;
    c.tls = {server.cert, server.key};
    return c;
  }

  void start(http::gateway_config c) {
    gw.route("GET", "/items/{id}", [](http::request& req, http::responder answer) {
      answer(http::json_response(200, {{"id", req.param("id")}, {"origin", req.origin()}}));
    });
    gw.route("POST", "/items", [](http::request& req, http::responder answer) {
      auto body = http::json_object_body(req);
      if (!body)
        return answer(body.err());
      answer(http::json_response(201, *body));
    });
    ASSERT_FALSE(gw.start(std::move(c)));
  }
  void start() { start(config()); }

  /// Whether a TLS handshake with a client set up by `tune` succeeds.
  template <class Tune>
  bool handshake_with(Tune tune) {
    ssl::context ctx{ssl::context::tls_client};
    ctx.set_verify_mode(ssl::verify_none);
    tune(ctx.native_handle());
    boost::asio::io_context io;
    boost::beast::ssl_stream<boost::beast::tcp_stream> s{io, ctx};
    boost::beast::get_lowest_layer(s).connect({boost::asio::ip::make_address("127.0.0.1"), gw.port()});
    boost::beast::get_lowest_layer(s).expires_after(5s);
    boost::beast::error_code ec;
    s.handshake(ssl::stream_base::client, ec);
    return !ec;
  }
};

/// How long until the server closes a connection that sends `bytes` and
/// then nothing (throws after `limit`).
std::chrono::milliseconds closed_after(uint16_t port, const std::string& bytes, std::chrono::seconds limit) {
  auto t0 = std::chrono::steady_clock::now();
  std::string out;
  try {
    out = raw_exchange(port, bytes, limit);
  } catch (const boost::system::system_error&) {
    // closed (reset) while the bytes were still being written
  }
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  EXPECT_EQ(out.find("HTTP/1.1"), std::string::npos) << "an HTTP answer over a TLS port";
  return took;
}

} // namespace https_tests

using https_tests::https_fixture;

TEST_F(https_fixture, serves_a_client_that_verifies_its_certificate_and_name) {
  start();
  http_client client{gw.port(), "127.0.0.1", ca.cert()};
  auto r = client.get("/items/7");
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(r.json()["id"], "7");
  EXPECT_EQ(r.json()["origin"], "https://127.0.0.1:" + std::to_string(gw.port())); // absolute URLs say https
  r = client.post("/items", {{"name", "tls"}});
  EXPECT_EQ(r.status, 201u);
  EXPECT_EQ(r.json()["name"], "tls");
  EXPECT_TRUE(r.keep_alive); // one handshake, many requests
  EXPECT_EQ(client.get("/items/8").status, 200u);
}

TEST_F(https_fixture, a_client_trusting_another_ca_refuses_the_server) {
  start();
  sourcery::testing::test_ca other{dir.str(), "other"};
  http_client client{gw.port(), "127.0.0.1", other.cert()};
  EXPECT_THROW(client.get("/items/1"), boost::system::system_error);
}

TEST_F(https_fixture, plain_http_gets_no_http_answer_and_the_server_serves_on) {
  start();
  for (int i = 0; i < 3; ++i)
    EXPECT_LT(https_tests::closed_after(gw.port(), "GET /items/1 HTTP/1.1\r\nHost: x\r\n\r\n", 10s), 5s);
  http_client client{gw.port(), "127.0.0.1", ca.cert()};
  EXPECT_EQ(client.get("/items/1").status, 200u);
}

TEST_F(https_fixture, tls_below_1_2_and_anonymous_suites_are_refused) {
  start();
  EXPECT_TRUE(handshake_with([](SSL_CTX*) {}));
  EXPECT_TRUE(handshake_with([](SSL_CTX* c) { SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION); }));
  EXPECT_FALSE(handshake_with([](SSL_CTX* c) {
    SSL_CTX_set_security_level(c, 0); // let the client offer what the server must refuse
    SSL_CTX_set_max_proto_version(c, TLS1_1_VERSION);
  }));
  EXPECT_FALSE(handshake_with([](SSL_CTX* c) {
    SSL_CTX_set_security_level(c, 0);
    SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(c, "aNULL:eNULL:EXPORT:@SECLEVEL=0");
  }));
}

TEST_F(https_fixture, silent_and_half_finished_handshakes_are_closed_after_the_read_timeout) {
  auto c = config();
  c.read_timeout = 300ms;
  start(c);
  EXPECT_LT(https_tests::closed_after(gw.port(), "", 10s), 3s);
  // The first bytes of a TLS 1.2 ClientHello record, then nothing.
  EXPECT_LT(https_tests::closed_after(gw.port(), std::string{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11}, 10s),
            3s);
  http_client client{gw.port(), "127.0.0.1", ca.cert()};
  EXPECT_EQ(client.get("/items/1").status, 200u);
}

TEST_F(https_fixture, random_bytes_on_many_connections_leave_it_serving) {
  auto c = config();
  c.read_timeout = 500ms; // a record announcing more than was sent waits this long
  start(c);
  std::mt19937 rng{7};
  for (int i = 0; i < 200; ++i) {
    std::string junk(1 + rng() % 600, '\0');
    for (auto& ch : junk)
      ch = static_cast<char>(rng());
    if (i % 2 == 0)
      junk[0] = '\x16'; // a handshake record's type, so the parse goes further
    https_tests::closed_after(gw.port(), junk, 10s);
  }
  http_client client{gw.port(), "127.0.0.1", ca.cert()};
  EXPECT_EQ(client.get("/items/1").status, 200u);
}

TEST_F(https_fixture, stops_within_its_drain_timeout_with_idle_tls_clients) {
  start();
  std::vector<std::unique_ptr<http_client>> idle;
  for (int i = 0; i < 5; ++i) {
    idle.push_back(std::make_unique<http_client>(gw.port(), "127.0.0.1", ca.cert()));
    ASSERT_EQ(idle.back()->get("/items/1").status, 200u);
  }
  auto t0 = std::chrono::steady_clock::now();
  gw.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

TEST(https_gateway, refuses_to_start_on_files_that_do_not_make_a_server) {
  sourcery::testing::temp_dir dir;
  sourcery::testing::test_ca ca{dir.str(), "web"};
  auto a = ca.issue("a");
  auto b = ca.issue("b");
  auto start_with = [](std::string cert, std::string key) {
    http::gateway gw;
    http::gateway_config c;
    c.port = 0;
    c.tls = {std::move(cert), std::move(key)};
    auto err = gw.start(c);
    return err ? sourcery::describe_error(err) : std::string{};
  };
  auto missing = start_with(dir.str() + "/nowhere.pem", a.key);
  EXPECT_NE(missing.find("nowhere.pem"), std::string::npos) << missing;
  auto mismatched = start_with(a.cert, b.key);
  EXPECT_NE(mismatched.find("does not match"), std::string::npos) << mismatched;
  auto half = start_with(a.cert, "");
  EXPECT_NE(half.find("both a certificate and its key"), std::string::npos) << half;
  auto not_pem = start_with(a.cert, a.cert); // a certificate where the key should be
  EXPECT_NE(not_pem.find(a.cert), std::string::npos) << not_pem;
  EXPECT_EQ(start_with(a.cert, a.key), "");
}
