// bank-node — the bank as a long-running service, one node of a cluster or alone.
//
//   bank-node [--store URI] [--cluster NAME --node HOST:PORT [--listen HOST:PORT]] [--http PORT] [--address A]
//             [--tls-cert FILE --tls-key FILE [--tls-ca FILE]] [--operations HOST:PORT]
//
// --node is where peers reach this node; --listen where it listens, when
// that differs (behind a proxy). With --tls-cert and --tls-key it serves
// HTTPS, and with --tls-ca as well its links to the other nodes are mutual
// TLS. --operations serves /health and /metrics at an address of their own.
//
// Serves the bank's commands over HTTP until SIGINT or SIGTERM, then hands
// its shards over and stops. Started several times with the same
// PostgreSQL store and cluster name, the nodes form a cluster: a command
// sent to any node runs on the node owning its account.
//
//   POST /accounts                {"account", "owner"}            201 | 422
//   POST /accounts/{id}/deposits  {"amount", "transfer"?}         200 {"version"} | 422
//   POST /accounts/{id}/withdrawals {"amount"}                    200 {"version"} | 422
//   POST /transfers               {"transfer", "from", "to", "amount"}  201 | 422
//   GET  /accounts/{id}           {"account", "open", "balance", "owner"}  (owner null once forgotten)
//   DELETE /accounts/{id}/personal-data   forgets the owner's name for good
//   GET  /transfers/{id}          {"transfer", "stage"}
//   GET  /cluster                 {"node", "members", "shards"}
//   GET  /health, /metrics

#include <cstdio>
#include <cstring>
#include <string>

#include "../common/narrate.hpp"
#include "../common/serving.hpp"
#include "balances.hpp"
#include "routes.hpp"
#include "sourcery/runtime/http/gateway.hpp"
#include "transfer_saga.hpp"

namespace {

namespace http = sourcery::http;
using json = nlohmann::json;


void reply(const http::responder& answer, unsigned status, caf::expected<sourcery::dispatch_result> r) {
  if (!r)
    return answer(http::dispatch_failure(r.error()));
  if (!r->accepted)
    return answer(http::rejected(r->why));
  answer(http::json_response(status, json{{"version", r->version}, {"position", r->last_position}}));
}

template <class C>
void run(sourcery::application& app, C cmd, unsigned status, const http::responder& answer) {
  sourcery::dispatch_options opts;
  opts.returns = sourcery::returning::version;
  app.dispatch_async(std::move(cmd), opts,
                     [answer, status](caf::expected<sourcery::dispatch_result> r) { reply(answer, status, std::move(r)); });
}

void add_routes(http::gateway& gw, sourcery::application& app) {
  gw.route("POST", "/accounts", [&app](http::request& req, http::responder answer) {
    auto body = http::json_object_body(req);
    if (!body)
      return answer(body.err());
    auto id = http::required_field<std::string>(*body, "account");
    auto owner = http::optional_field<std::string>(*body, "owner");
    if (auto e = http::first_error(id, owner))
      return answer(*e);
    run(app, bank::open_account{*id, owner->value_or(*id)}, 201, answer);
  });
  gw.route("POST", "/accounts/{id}/deposits", [&app](http::request& req, http::responder answer) {
    auto body = http::json_object_body(req);
    if (!body)
      return answer(body.err());
    auto amount = http::required_field<int64_t>(*body, "amount");
    auto transfer = http::optional_field<std::string>(*body, "transfer");
    if (auto e = http::first_error(amount, transfer))
      return answer(*e);
    run(app, bank::deposit{req.param("id"), *amount, transfer->value_or("")}, 200, answer);
  });
  gw.route("POST", "/accounts/{id}/withdrawals", [&app](http::request& req, http::responder answer) {
    auto body = http::json_object_body(req);
    if (!body)
      return answer(body.err());
    auto amount = http::required_field<int64_t>(*body, "amount");
    if (!amount)
      return answer(amount.err());
    run(app, bank::withdraw{req.param("id"), *amount}, 200, answer);
  });
  gw.route("POST", "/transfers", [&app](http::request& req, http::responder answer) {
    auto body = http::json_object_body(req);
    if (!body)
      return answer(body.err());
    auto id = http::required_field<std::string>(*body, "transfer");
    auto from = http::required_field<std::string>(*body, "from");
    auto to = http::required_field<std::string>(*body, "to");
    auto amount = http::required_field<int64_t>(*body, "amount");
    if (auto e = http::first_error(id, from, to, amount))
      return answer(*e);
    run(app, bank::request_transfer{*id, *from, *to, *amount}, 201, answer);
  });
  gw.route("GET", "/accounts/{id}", [&app](http::request& req, http::responder answer) {
    auto a = app.aggregate_state<bank::account>("account-" + req.param("id"));
    if (!a)
      return answer(http::dispatch_failure(a.error()));
    if (!a->open)
      return answer(http::error{404, "not_found", "no account " + req.param("id")});
    answer(http::json_response(200, json{{"account", req.param("id")},
                                         {"open", a->open},
                                         {"balance", a->balance},
                                         {"owner", a->owner.known() ? json(a->owner.value()) : json(nullptr)}}));
  });
  gw.route("DELETE", "/accounts/{id}/personal-data", [&app](http::request& req, http::responder answer) {
    // Blocks for one durable write: the gateway runs routes off its I/O thread.
    auto forgot = app.forget("account-" + req.param("id"));
    if (!forgot)
      return answer(http::dispatch_failure(forgot.error()));
    answer(http::json_response(200, json{{"account", req.param("id")}, {"forgotten", true}, {"had_key", *forgot}}));
  });
  gw.route("GET", "/transfers/{id}", [&app](http::request& req, http::responder answer) {
    auto t = app.aggregate_state<bank::transfer>("transfer-" + req.param("id"));
    if (!t)
      return answer(http::dispatch_failure(t.error()));
    if (t->at == bank::transfer::stage::none)
      return answer(http::error{404, "not_found", "no transfer " + req.param("id")});
    static constexpr const char* stages[] = {"none", "requested", "completed", "failed"};
    answer(http::json_response(200, json{{"transfer", req.param("id")}, {"stage", stages[static_cast<int>(t->at)]}}));
  });
  gw.route("GET", "/cluster", [&app](http::request&, http::responder answer) {
    auto where = app.placement();
    answer(http::json_response(200, json{{"node", where.node}, {"members", where.members}, {"shards", where.shards_owned}}));
  });
}

} // namespace

const char* const routes_help =
  "routes (JSON bodies, Content-Type: application/json):\n"
  "  POST /accounts                   {\"account\", \"owner\"?}                      201 | 422\n"
  "  POST /accounts/{id}/deposits     {\"amount\", \"transfer\"?}                    200 | 422\n"
  "  POST /accounts/{id}/withdrawals  {\"amount\"}                                 200 | 422\n"
  "  POST /transfers                  {\"transfer\", \"from\", \"to\", \"amount\"}     201 | 422\n"
  "  GET  /accounts/{id}              {\"account\", \"open\", \"balance\", \"owner\"} 200 | 404\n"
  "  DELETE /accounts/{id}/personal-data  forgets the owner's name (then \"owner\": null)   200\n"
  "  GET  /transfers/{id}             {\"transfer\", \"stage\"}                      200 | 404\n"
  "  GET  /cluster                    {\"node\", \"members\", \"shards\"}\n"
  "  GET  /health, /metrics           the node's state; Prometheus metrics\n";

int main(int argc, char** argv) {
  sourcery::application_config config;
  http::gateway_config web;
  web.port = 8080;
  web.address = "127.0.0.1";
  CLI::App cli{"The bank as a service: one node of a cluster, or alone.", "bank-node"};
  demo::demo_options options{cli, config, "bank-data", true};
  cli.add_option("--http", web.port, "the HTTP port (0: any free port)")->capture_default_str();
  cli.add_option("--address", web.address, "the HTTP address (127.0.0.1: this machine only)")->capture_default_str();
  demo::serving_options serving{cli};
  cli.footer(routes_help);
  options.parse(cli, argc, argv, config);
  web.tls = options.server_tls();

  http::gateway gw;
  http::gateway operations; // with --operations
  // Declared down by the cluster, or a tree that gave up: stop and exit
  // non-zero, so that the process supervisor starts a fresh node.
  config.on_failure = [&gw](const caf::error&) { gw.request_stop(); };
  auto app = sourcery::application::start(config, bank::routes());
  if (!app) {
    std::fprintf(stderr, "bank-node: cannot start on %s: %s\n", demo::store_location(config).c_str(),
                 sourcery::describe_error(app.error()).c_str());
    return 1;
  }
  if (auto p = (*app)->add_projection<bank::balances>(); !p) {
    std::fprintf(stderr, "bank-node: cannot start the balances: %s\n", sourcery::describe_error(p.error()).c_str());
    return 1;
  }
  if (auto s = (*app)->add_process_manager<bank::transfer_saga>(); !s) {
    std::fprintf(stderr, "bank-node: cannot start the transfer saga: %s\n", sourcery::describe_error(s.error()).c_str());
    return 1;
  }
  add_routes(gw, **app);
  web.metrics = &(*app)->metrics();
  auto& node_app = **app;
  auto err = serving.serve(gw, operations, web,
                           [&node_app](http::gateway& g) { sourcery::http::add_operations_routes(g, node_app); });
  if (!err)
    err = gw.start(web);
  if (err) {
    operations.stop(); // before the application its routes use
    std::fprintf(stderr, "bank-node: %s\n", sourcery::describe_error(err).c_str());
    return 1;
  }
  gw.stop_on_signals();
  auto scheme = demo::serving_options::scheme(web);
  if (options.cluster_name().empty())
    std::printf("bank-node: listening on %s://%s:%u (%s)\n", scheme, web.address.c_str(), gw.port(),
                demo::store_location(config).c_str());
  else
    std::printf("bank-node: listening on %s://%s:%u, node %s of cluster %s (%zu members)\n", scheme,
                web.address.c_str(), gw.port(), options.node().c_str(), options.cluster_name().c_str(),
                (*app)->placement().members);
  serving.announce("bank-node", web);
  gw.wait();
  operations.stop();
  auto why = (*app)->failure();
  (*app)->stop();
  if (why) {
    std::fprintf(stderr, "bank-node: %s\n", sourcery::describe_error(why).c_str());
    return 1;
  }
  std::printf("bank-node: stopped\n");
  return 0;
}
