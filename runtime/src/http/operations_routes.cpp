#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/http/gateway.hpp"

namespace sourcery::http {

error dispatch_failure(const caf::error& err) {
  using persistence::store_errc;
  auto message = describe_error(err);
  switch (code_of_dispatch(err)) {
    case dispatch_errc::timeout:
      return {504, "timeout", message};
    case dispatch_errc::consistency_timeout:
      return {503, "consistency_timeout", message};
    case dispatch_errc::stopped:
      return {503, "stopped", message};
    case dispatch_errc::halted:
      return {403, "halted", message};
    case dispatch_errc::invalid_identity:
      return {422, "invalid_aggregate_identity", message};
    case dispatch_errc::unavailable:
    case dispatch_errc::moved: // retried by the cluster until the deadline: not seen here
      return {503, "unavailable", message};
    case dispatch_errc::too_large:
      return {413, "too_large", message};
    case dispatch_errc::malformed_command: // a command our own route encoded: a bug, not the client's
    case dispatch_errc::unregistered_command:
    case dispatch_errc::invalid_route:
      return {500, "internal_error", message};
    case dispatch_errc::none:
      break;
  }
  switch (persistence::code_of(err)) {
    case store_errc::wrong_expected_version:
      return {409, "conflict", message};
    case store_errc::store_full:
      return {507, "store_full", message};
    case store_errc::store_closed:
      return {503, "stopped", message};
    case store_errc::unavailable:           // the database server is out of reach
    case store_errc::authentication_failed: // ... or refuses us: either way, not the client's fault
    case store_errc::fenced:                // this node lost the aggregate's shard to another
      return {503, "store_unavailable", message};
    case store_errc::timeout:
      return {504, "store_timeout", message};
    default:
      return {500, "internal_error", message};
  }
}

error rejected(const rejection& why, unsigned status) {
  if (!why.message.empty())
    return {status, why.reason, why.message};
  // No message of the domain's: say in words what the code says.
  std::string words = why.reason;
  for (auto& c : words)
    if (c == '_')
      c = ' ';
  return {status, why.reason, "the command was rejected: " + words};
}

void add_operations_routes(gateway& gw, application& app) {
  gw.route(
    "GET", "/health",
    [&app](request&, responder answer) {
      // From memory only: answered at once whatever the store does.
      json handlers = json::array();
      bool degraded = false;
      for (auto& h : app.handler_reports()) {
        json j{{"name", h.name}, {"kind", h.kind}, {"state", h.state}, {"position", h.position}};
        if (!h.reason.empty())
          j["reason"] = h.reason;
        degraded |= h.state == "stopped";
        handlers.push_back(std::move(j));
      }
      auto with = [&](unsigned status, json body) {
        body["handlers"] = std::move(handlers);
        answer(json_response(status, body));
      };
      if (auto why = app.failure())
        with(503, json{{"status", "failed"}, {"reason", describe_error(why)}});
      else if (!app.running())
        with(503, json{{"status", "stopping"}});
      else if (auto out = app.outage())
        with(503, json{{"status", "unavailable"}, {"reason", describe_error(out)}});
      else if (auto store = app.store_health())
        with(503, json{{"status", "unavailable"}, {"reason", "store: " + describe_error(store)}});
      else if (degraded)
        with(200, json{{"status", "degraded"},
                       {"reason", "a handler has stopped on an event; commands are served"},
                       {"head_position", app.store().head_position()}});
      else
        with(200, json{{"status", "ok"}, {"head_position", app.store().head_position()}});
    },
    route_thread::io);
  gw.route(
    "GET", "/metrics",
    [&app](request&, responder answer) {
      response r;
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = app.metrics_text();
      answer(std::move(r));
    },
    route_thread::io);
}

} // namespace sourcery::http
