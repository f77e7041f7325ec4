#pragma once

// The HTTP gateway: a Boost.Beast HTTP/1.1 server whose routes map requests
// to commands and queries. It owns the transport concerns every such server
// gets wrong once: size limits (413/431), read timeouts (408), 404/405 with
// Allow, CORS with OPTIONS preflight, keep-alive, and a graceful stop that
// drains the requests in flight.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/expected.hpp>

#include "sourcery/runtime/http/message.hpp"

namespace sourcery {
class metrics;
class application;
struct rejection;
} // namespace sourcery

namespace sourcery::http {

struct gateway_config {
  std::string address = "0.0.0.0";
  uint16_t port = 8080; ///< 0: any free port (see `gateway::port`)
  int threads = 1;      ///< I/O threads; routes should not block them
  std::size_t body_limit = 1 << 20;  ///< larger bodies: 413
  std::size_t header_limit = 8 << 10; ///< larger headers: 431
  /// A request must arrive whole within this; a connection idle this long
  /// is closed.
  std::chrono::milliseconds read_timeout{15000};
  /// How long `stop` waits for requests in flight before closing anyway.
  std::chrono::milliseconds drain_timeout{10000};
  /// `Access-Control-Allow-Origin` on every response ("": no CORS headers).
  std::string cors_origin = "*";
  /// Counts requests by status class and their latency (optional).
  sourcery::metrics* metrics = nullptr;
};

class gateway {
public:
  gateway();
  ~gateway(); ///< stops
  gateway(const gateway&) = delete;
  gateway& operator=(const gateway&) = delete;

  /// Adds a route before `start`. `pattern` is a path whose segments are
  /// literals or `{name}` parameters, e.g. "/todos/{id}". HEAD is served by
  /// the GET route; OPTIONS is answered for every path.
  void route(std::string method, std::string pattern, handler h);

  /// Binds and serves on background threads. Errors: the bind's (a
  /// `caf::sec::runtime_error` whose message says address and cause).
  caf::error start(gateway_config config);
  /// The bound port (after `start`).
  uint16_t port() const noexcept;

  /// Stops accepting, lets each request in flight finish (its response
  /// says `Connection: close`), closes idle connections, and returns once
  /// all are closed or `drain_timeout` passed. Idempotent.
  void stop();
  /// From now on SIGINT and SIGTERM stop the gateway (call after `start`,
  /// before announcing that the server is ready).
  void stop_on_signals();
  /// Blocks until a signal (see `stop_on_signals`), a `request_stop` or a
  /// `stop` from another thread, then stops. For a server's `main`.
  void wait();
  /// Makes `wait` return (after stopping) without blocking the caller: safe
  /// from any thread, e.g. from `application_config::on_failure`.
  void request_stop();
  /// `stop_on_signals`, then `wait`.
  void run_until_signal() {
    stop_on_signals();
    wait();
  }

  struct impl; // opaque: the Beast transport (http_gateway.cpp)

private:
  std::unique_ptr<impl> impl_;
};

/// The answer to a failed dispatch: 504 timeout, 503 consistency_timeout or
/// stopped, 403 halted (by middleware), 409 conflict, 507 store_full, 500
/// otherwise. The body's message says what happened (and, after a
/// consistency timeout, that the events were stored).
error dispatch_failure(const caf::error& err);
/// The answer to a domain rejection: its reason as the code, with `status`
/// (422 by default; 404 for "not_found" and 409 for conflicts are the route's choice).
error rejected(const rejection& why, unsigned status = 422);

/// Adds `GET /health` (200 `{"status":"ok"}` while the application runs,
/// 503 once it stops) and `GET /metrics` (Prometheus text format).
void add_operations_routes(gateway& gw, application& app);

} // namespace sourcery::http
