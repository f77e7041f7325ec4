#pragma once

// What the servers (todo-server, bank-node) share on their HTTP side:
// HTTPS with the server's own `--tls-cert`/`--tls-key` (demo_options), and
// `/health` and `/metrics` on an address of their own with `--operations
// HOST:PORT` -- a monitoring network, or a port the load balancer probes
// that the API's clients never reach.

#include <cstdio>
#include <functional>
#include <string>
#include <utility>

#include <CLI/CLI.hpp>

#include "sourcery/runtime/cluster/cluster_settings.hpp" // split_node_address: plain functions, in every build
#include "sourcery/runtime/http/gateway.hpp"

namespace demo {

class serving_options {
public:
  explicit serving_options(CLI::App& app) {
    app.add_option("--operations", address_,
                   "serve /health and /metrics at HOST:PORT instead of beside the API (with --tls-cert, over HTTPS too)")
      ->type_name("HOST:PORT")
      ->check([](const std::string& s) {
        return sourcery::cluster::split_node_address(s) ? std::string{} : "takes HOST:PORT with a port from 1 to 65535";
      });
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
    auto where = sourcery::cluster::split_node_address(address_);
    auto cfg = api_cfg;
    cfg.address = where->first;
    if (cfg.address.size() >= 2 && cfg.address.front() == '[' && cfg.address.back() == ']')
      cfg.address = cfg.address.substr(1, cfg.address.size() - 2); // [::1]:9090
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
