#pragma once

// The HTTP gateway: a Boost.Beast HTTP/1.1 server whose routes map requests
// to commands and queries. It owns the transport concerns every such server
// gets wrong once: size limits (413/431), read timeouts (408), 404/405 with
// Allow, CORS with OPTIONS preflight, keep-alive, and a graceful stop that
// drains the requests in flight. With a certificate and key it serves
// HTTPS instead (TLS 1.2 or later).

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

/// The files of an HTTPS server, in PEM: its certificate (chain) and its
/// unencrypted private key. Both or neither.
struct tls_files {
  std::string cert;
  std::string key;
  bool enabled() const { return !cert.empty() || !key.empty(); }
};

struct gateway_config {
  /// The address to listen on: this machine only unless told otherwise
  /// ("0.0.0.0" or "::" for every interface).
  std::string address = "127.0.0.1";
  uint16_t port = 8080; ///< 0: any free port (see `gateway::port`)
  int threads = 1;      ///< I/O threads: parse, write, and run `on_io_thread` routes
  /// Threads that run the routes (`route_thread::workers`): a route that
  /// waits (a read-model query on a frozen database) holds one of these,
  /// never the I/O thread, so /health and the other connections go on.
  int workers = 4;
  std::size_t body_limit = 1 << 20;  ///< larger bodies: 413
  std::size_t header_limit = 8 << 10; ///< larger headers: 431
  /// A request must arrive whole within this; a connection idle this long
  /// is closed.
  std::chrono::milliseconds read_timeout{15000};
  /// How long `stop` waits for requests in flight before closing anyway.
  std::chrono::milliseconds drain_timeout{10000};
  /// `Access-Control-Allow-Origin` on every response ("": no CORS headers).
  std::string cors_origin = "*";
  /// HTTPS when set: every connection is TLS (1.2 or later, ciphers
  /// "HIGH:!aNULL:!MD5"); a client that does not complete the handshake
  /// within `read_timeout` is closed. Plain HTTP is not served beside it.
  tls_files tls;
  /// Counts requests by status class and their latency (optional).
  sourcery::metrics* metrics = nullptr;
};

/// Where a route's handler runs.
enum class route_thread {
  /// On the gateway's worker threads (the default): the handler may block
  /// (a query) without delaying anyone else's request.
  workers,
  /// On the I/O thread, at once: for handlers that never block (they
  /// answer from memory, or dispatch asynchronously), such as /health,
  /// which must answer within a second whatever the store does.
  io,
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
  void route(std::string method, std::string pattern, handler h, route_thread where = route_thread::workers);

  /// Binds and serves on background threads. Errors (a
  /// `caf::sec::runtime_error` whose message says address and cause): the
  /// bind's; with `tls`, a certificate or key that does not load, a key
  /// that does not match the certificate, or only one of the two given.
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

/// Adds `GET /health` and `GET /metrics` (Prometheus text format), both
/// answered on the I/O thread from memory, whatever the store does.
/// /health: 200 `{"status":"ok"}` while commands can succeed; 200
/// `"degraded"` while they can but a handler has stopped on an event (see
/// `handlers`); 503 with `"status"` `"unavailable"` (the store does not
/// answer, or the node is out of its cluster: it heals), `"failed"` (the
/// application gave up: restart it) or `"stopping"`, and a `"reason"`.
/// Each handler is listed with its state (running, retrying, stopped), its
/// position and why it does not run.
void add_operations_routes(gateway& gw, application& app);

} // namespace sourcery::http
