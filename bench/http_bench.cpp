// The todo-server's HTTP API under load: 64 keep-alive clients creating,
// then patching todos, durable, against the same commands dispatched
// without HTTP in the same run (the baseline); then creating over HTTPS,
// against plain HTTP in the same run.

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>

#include <utility> // before Asio: Boost 1.74 uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "../examples/todo/todo_api.hpp"
#include "../tests/support/test_ca.hpp"
#include "bank_load.hpp"

namespace sourcery::bench {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace fs = std::filesystem;

struct started_server {
  std::unique_ptr<application> app;
  std::unique_ptr<todo::todo_api> api;
  std::unique_ptr<http::gateway> gw;
};

started_server start_server(const std::string& dir, http::tls_files tls = {}) {
  application_config config;
  config.data_dir = dir;
  auto app = application::start(config, todo::routes());
  auto models = app ? todo::start_read_model(**app) : caf::expected<persistence::projection_store*>{app.error()};
  if (!models) {
    std::fprintf(stderr, "http bench: cannot start the todo application\n");
    std::exit(1);
  }
  started_server s;
  s.app = std::move(*app);
  s.api = std::make_unique<todo::todo_api>(*s.app, **models);
  s.gw = std::make_unique<http::gateway>();
  s.api->add_routes(*s.gw);
  http::gateway_config c;
  c.address = "127.0.0.1";
  c.port = 0;
  c.tls = std::move(tls);
  if (auto err = s.gw->start(c)) {
    std::fprintf(stderr, "http bench: %s\n", describe_error(err).c_str());
    std::exit(1);
  }
  return s;
}

using tls_stream = beast::ssl_stream<beast::tcp_stream>;

/// One client's keep-alive connection and the request it has out.
template <class Stream>
struct client_connection {
  Stream stream;
  beast::flat_buffer buffer;
  bhttp::request<bhttp::string_body> req;
  bhttp::response<bhttp::string_body> res;
  int index = 0;
  std::chrono::steady_clock::time_point t0;
  explicit client_connection(net::io_context& io) : stream(io) {}
  client_connection(net::io_context& io, net::ssl::context& tls) : stream(io, tls) {}
};

/// `clients` keep-alive connections (over TLS, verified, with `tls`), each
/// sending its next request as soon as the last is answered, until `total`
/// requests are answered. Returns requests/s; `lat` gets each request's
/// latency in µs. The handshakes happen before the clock starts.
template <class Stream, class Make>
double closed_loop_over(uint16_t port, int clients, int total, Make make, std::vector<double>& lat,
                        net::ssl::context* tls) {
  net::io_context io;
  std::atomic<int> next{0};
  std::atomic<int> failures{0};
  lat.assign(static_cast<size_t>(total), 0.0);
  using conn = client_connection<Stream>;
  std::function<void(std::shared_ptr<conn>)> issue = [&](std::shared_ptr<conn> c) {
    c->index = next.fetch_add(1);
    if (c->index >= total)
      return;
    c->req = make(c->index);
    c->req.set(bhttp::field::host, "127.0.0.1:" + std::to_string(port));
    c->req.keep_alive(true);
    c->req.prepare_payload();
    c->t0 = std::chrono::steady_clock::now();
    bhttp::async_write(c->stream, c->req, [&, c](beast::error_code ec, size_t) {
      if (ec) {
        failures.fetch_add(1);
        return;
      }
      c->res = {};
      bhttp::async_read(c->stream, c->buffer, c->res, [&, c](beast::error_code rec, size_t) {
        if (rec || c->res.result_int() >= 300)
          failures.fetch_add(1);
        lat[static_cast<size_t>(c->index)] =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c->t0).count();
        if (!rec)
          issue(c);
      });
    });
  };
  std::vector<std::shared_ptr<conn>> conns;
  for (int i = 0; i < clients; ++i) {
    std::shared_ptr<conn> c;
    if constexpr (std::is_same_v<Stream, tls_stream>) {
      c = std::make_shared<conn>(io, *tls);
      beast::get_lowest_layer(c->stream).connect({net::ip::make_address("127.0.0.1"), port});
      c->stream.set_verify_callback(net::ssl::host_name_verification("127.0.0.1"));
      c->stream.handshake(net::ssl::stream_base::client);
    } else {
      c = std::make_shared<conn>(io);
      c->stream.connect({net::ip::make_address("127.0.0.1"), port});
    }
    conns.push_back(c);
  }
  auto start = std::chrono::steady_clock::now();
  for (auto& c : conns)
    issue(c);
  io.run();
  double secs = seconds_since(start);
  if (failures.load() > 0)
    std::fprintf(stderr, "%d HTTP requests failed\n", failures.load());
  return total / secs;
}

template <class Make>
double http_closed_loop(uint16_t port, int clients, int total, Make make, std::vector<double>& lat) {
  return closed_loop_over<beast::tcp_stream>(port, clients, total, make, lat, nullptr);
}

bhttp::request<bhttp::string_body> make_request(bhttp::verb verb, std::string target, const nlohmann::json& body) {
  bhttp::request<bhttp::string_body> req{verb, target, 11};
  req.set(bhttp::field::content_type, "application/json");
  req.body() = body.dump();
  return req;
}

} // namespace

int run_http_suite(const options& opts) {
  constexpr int clients = 64;
  const int total = std::max(1000, static_cast<int>(20'000 * opts.scale));
  auto root = fs::path{opts.dir.empty() ? fs::temp_directory_path().string() : opts.dir}
              / ("sourcery-http-bench-" + std::to_string(::getpid()));
  fs::remove_all(root);

  double baseline = 0;
  // The baseline: the same create commands, strong towards the same read
  // model, dispatched in process by 64 concurrent dispatchers.
  {
    auto s = start_server((root / "baseline").string());
    std::vector<double> lat;
    dispatch_options strong;
    strong.consistency_level = consistency::strong;
    strong.consistent_with = {todo::todo_list::projection_name};
    baseline = closed_loop(
      *s.app, clients, total,
      [](int i) {
        // New ids as the API makes them.
        return todo::create_todo{persistence::uuid::time_ordered().to_string(), "todo " + std::to_string(i)};
      },
      lat, strong);
    report("http", "dispatch_baseline_64", baseline, "commands/s");
    s.gw->stop();
    s.app->stop();
  }

  auto s = start_server((root / "http").string());
  auto port = s.gw->port();
  std::vector<double> lat;
  double created = http_closed_loop(
    port, clients, total,
    [](int i) { return make_request(bhttp::verb::post, "/todos", {{"title", "todo " + std::to_string(i)}}); }, lat);
  report("http", "http_create_64", created, "requests/s");
  report("http", "http_create_64_p50", percentile(lat, 0.50), "us");
  report("http", "http_create_64_p99", percentile(lat, 0.99), "us");

  auto rows = (*s.app->read_models())->scan(todo::todo_list::projection_name, todo::todos.name());
  std::vector<std::string> ids;
  for (auto& [id, value] : *rows)
    ids.push_back(id);
  double patched = http_closed_loop(
    port, clients, total,
    [&](int i) {
      return make_request(bhttp::verb::patch, "/todos/" + ids[static_cast<size_t>(i) % ids.size()],
                          {{"completed", i % 2 == 0}, {"order", i}});
    },
    lat);
  report("http", "http_patch_64", patched, "requests/s");
  report("http", "http_patch_64_p50", percentile(lat, 0.50), "us");
  report("http", "http_patch_64_p99", percentile(lat, 0.99), "us");
  report("http", "http_create_vs_baseline", created / std::max(1.0, baseline), "ratio");
  s.gw->stop();
  s.app->stop();

  // HTTPS: the same creates over TLS 1.3 (keep-alive: one handshake per
  // client), against plain HTTP measured again now, on a fresh store each.
  fs::create_directories(root / "certificates");
  std::optional<sourcery::testing::test_ca> ca;
  sourcery::testing::test_ca::issued server;
  try {
    ca.emplace((root / "certificates").string(), "bench"); // Debian's openssl command
    server = ca->issue("server");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http bench: cannot make certificates (apt-get install openssl): %s\n", e.what());
    return 1;
  }
  net::ssl::context client_tls{net::ssl::context::tls_client};
  client_tls.load_verify_file(ca->cert());
  client_tls.set_verify_mode(net::ssl::verify_peer);
  auto create = [](int i) { return make_request(bhttp::verb::post, "/todos", {{"title", "todo " + std::to_string(i)}}); };
  double plain = 0;
  {
    auto p = start_server((root / "plain").string());
    plain = http_closed_loop(p.gw->port(), clients, total, create, lat);
    p.gw->stop();
    p.app->stop();
  }
  auto t = start_server((root / "tls").string(), {server.cert, server.key});
  double over_tls = closed_loop_over<tls_stream>(t.gw->port(), clients, total, create, lat, &client_tls);
  report("http", "http_create_64_tls", over_tls, "requests/s");
  report("http", "http_create_64_tls_p99", percentile(lat, 0.99), "us");
  report("http", "http_create_64_plain_again", plain, "requests/s");
  report("http", "http_tls_vs_plain", over_tls / std::max(1.0, plain), "ratio");
  t.gw->stop();
  t.app->stop();
  fs::remove_all(root);
  return 0;
}

} // namespace sourcery::bench
