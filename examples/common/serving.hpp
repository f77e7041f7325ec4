#pragma once

// What the servers (todo-server, bank-node) share on their HTTP side:
// HTTPS with the server's own `--tls-cert`/`--tls-key` (demo_options), and
// `/health` and `/metrics` on an address of their own with `--operations
// HOST:PORT` -- a monitoring network, or a port the load balancer probes
// that the API's clients never reach.

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <CLI/CLI.hpp>

#include "sourcery/runtime/http/gateway.hpp"

namespace demo {

/// "host:port" or "[v6]:port" -> (host, port); nullopt when the port is
/// missing or not 1-65535.
inline std::optional<std::pair<std::string, uint16_t>> split_host_port(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return std::nullopt;
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  auto digits = std::string_view{text}.substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc{} || end != digits.data() + digits.size() || port == 0 || port > 65535)
    return std::nullopt;
  return std::make_pair(std::move(host), static_cast<uint16_t>(port));
}

class serving_options {
public:
  explicit serving_options(CLI::App& app) {
    app.add_option("--operations", address_,
                   "serve /health and /metrics at HOST:PORT instead of beside the API (with --tls-cert, over HTTPS too)")
      ->type_name("HOST:PORT")
      ->check([](const std::string& s) { return split_host_port(s) ? std::string{} : "takes HOST:PORT"; });
  }

  /// "https" with TLS files, else "http".
  static const char* scheme(const sourcery::http::gateway_config& cfg) { return cfg.tls.enabled() ? "https" : "http"; }

  /// Adds the operations routes (`add`) beside the API on `api`, or, with
  /// `--operations`, starts `ops` with them at that address, with the API's
  /// TLS and metrics (`api_cfg`). Errors: `gateway::start`'s.
  caf::error serve(sourcery::http::gateway& api, sourcery::http::gateway& ops,
                   const sourcery::http::gateway_config& api_cfg,
                   const std::function<void(sourcery::http::gateway&)>& add) const {
    if (address_.empty()) {
      add(api);
      return {};
    }
    auto where = split_host_port(address_);
    auto cfg = api_cfg;
    cfg.address = where->first;
    cfg.port = where->second;
    cfg.workers = 1; // its routes answer on the I/O thread
    add(ops);
    return ops.start(cfg);
  }

  /// After "listening on": where /health and /metrics are, when elsewhere.
  void announce(const char* program, const sourcery::http::gateway_config& api_cfg) const {
    if (!address_.empty())
      std::printf("%s: operations on %s://%s/health and /metrics\n", program, scheme(api_cfg), address_.c_str());
    std::fflush(stdout);
  }

private:
  std::string address_;
};

} // namespace demo
