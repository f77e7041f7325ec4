// todo-server — the Todo-Backend API (todobackend.com), event-sourced.
//
//   todo-server [--port N] [--address A] [--store URI] [--data-dir DIR] [--in-memory]
//               [--cluster NAME --node HOST:PORT] [--tenants]
//               [--tls-cert FILE --tls-key FILE [--tls-ca FILE]] [--operations HOST:PORT]
//   todo-server admin COMMAND ...   the operator tool, with the todo list projection
//
// Serves /todos on LMDB in DIR (default ./todo-data) until SIGINT or SIGTERM,
// then drains the requests in flight and stops. Restarted on the same
// directory, it serves the same todos. /health and /metrics are for operators.
// With --cluster, several servers on one PostgreSQL store serve one todo
// list: each todo's commands run on the node owning it, the list's
// projection on one node of the cluster. With --tenants, /{tenant}/todos is
// each tenant's own list in its own store: DIR/tenants/<name> on LMDB, the
// schema tenant_<name> on PostgreSQL; both together, the servers of the
// cluster serve every tenant, each tenant's todos placed like one list's.
// With --tls-cert and --tls-key it
// serves HTTPS (and with --tls-ca, a cluster's links are mutual TLS);
// --operations serves /health and /metrics at an address of their own.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../common/narrate.hpp"
#include "../common/serving.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/http/gateway.hpp"
#include "sourcery/runtime/tool/operator_tool.hpp"
#include "todo_api.hpp"
#include "todo_tenants.hpp"

namespace {

const char* const routes_help =
  "routes (the Todo-Backend API, todobackend.com; JSON bodies, Content-Type: application/json):\n"
  "  GET    /todos          every todo, in creation order                 200\n"
  "  POST   /todos          {\"title\", \"completed\"?, \"order\"?}           201 | 400 | 415 | 422\n"
  "  DELETE /todos          deletes every todo                            204\n"
  "  GET    /todos/{id}     one todo                                      200 | 404\n"
  "  PATCH  /todos/{id}     {\"title\"?, \"completed\"?, \"order\"?}          200 | 404 | 415 | 422\n"
  "  DELETE /todos/{id}     deletes one todo                              204 | 404\n"
  "  GET    /health         the server's state (503 while it cannot write); GET /metrics: Prometheus\n"
  "With --tenants, the same routes under /{tenant}: /acme/todos is tenant acme's own list.\n";

/// todo-server --tenants: an application per tenant, opened on demand.
int serve_tenants(const sourcery::application_config& config, sourcery::http::gateway_config http,
                  const demo::serving_options& serving) {
  std::string root = config.in_memory ? "memory:" : "lmdb:" + config.data_dir + "/tenants";
  if (!config.store_uri.empty()) {
    auto uri = sourcery::persistence::store_uri::parse(config.store_uri);
    if (uri && uri->type == sourcery::persistence::store_uri::kind::memory)
      root = "memory:";
    else if (uri && uri->type == sourcery::persistence::store_uri::kind::lmdb)
      root = "lmdb:" + uri->location + "/tenants";
    else
      root = config.store_uri; // PostgreSQL: a schema per tenant
  }
  auto host_cfg = todo::tenants_config(root);
  host_cfg.base = config;
  if (host_cfg.base.scheduler_threads == 0)
    host_cfg.base.scheduler_threads = 1; // many applications share the cores
  auto host = sourcery::application_host::start(std::move(host_cfg));
  if (!host) {
    std::fprintf(stderr, "todo-server: %s\n", sourcery::describe_error(host.error()).c_str());
    return 1;
  }
  sourcery::http::gateway gw;
  sourcery::http::gateway operations; // with --operations
  todo::add_tenant_routes(gw, **host);
  auto err = serving.serve(gw, operations, http, [h = host->get()](sourcery::http::gateway& g) {
    g.route("GET", "/health", [h](sourcery::http::request&, sourcery::http::responder answer) {
      nlohmann::json health{{"status", "ok"}, {"tenants", h->open_tenants()}};
      int status = 200;
      if (auto* node = h->node()) { // in a cluster: the node every tenant routes through
        auto p = node->placement();
        health["node"] = p.node;
        health["members"] = p.members;
        health["shards_owned"] = p.shards_owned;
        if (auto why = node->outage()) {
          status = 503;
          health["status"] = "unavailable";
          health["error"] = sourcery::describe_error(why);
        }
      }
      answer(sourcery::http::json_response(status, health));
    });
  });
  if (!err)
    err = gw.start(http);
  if (err) {
    operations.stop(); // before the application its routes use
    std::fprintf(stderr, "todo-server: %s\n", sourcery::describe_error(err).c_str());
    return 1;
  }
  gw.stop_on_signals();
  std::printf("todo-server: listening on %s://%s:%u/{tenant}/todos (tenants in %s)\n",
              demo::serving_options::scheme(http), http.address.c_str(), gw.port(),
              sourcery::persistence::redact_password(root).c_str());
  serving.announce("todo-server", http);
  gw.wait();
  operations.stop();
  std::printf("todo-server: stopping\n");
  (*host)->stop();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "admin") == 0) {
    sourcery::operator_tool tool{"todo-server admin"};
    tool.default_data_dir("todo-data").add_routes(todo::routes());
    tool.add_projection<todo::todo_list>("the todo list served at /todos");
    return tool.run(argc - 1, argv + 1);
  }
  sourcery::application_config config;
  sourcery::http::gateway_config http;
  CLI::App cli{"The Todo-Backend API (todobackend.com), event-sourced.", "todo-server"};
  demo::demo_options options{cli, config, "todo-data"};
  cli.add_option("--port", http.port, "the HTTP port (0: any free port)")->capture_default_str();
  cli.add_option("--address", http.address, "the HTTP address (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    ->capture_default_str();
  bool tenants = false;
  cli.add_flag("--tenants", tenants,
               "serve a todo list per tenant at /{tenant}/todos (a name of 1 to 40 of a-z, 0-9 and '-'), each in "
               "a store of its own: DIR/tenants/<name>, or the schema tenant_<name>");
  demo::serving_options serving{cli};
  cli.footer(std::string{routes_help} + "\ntodo-server admin COMMAND ...: the operator tool (`todo-server admin --help`).\n");
  options.parse(cli, argc, argv, config);
  http.tls = options.server_tls();
  if (tenants)
    return serve_tenants(config, http, serving);

  sourcery::http::gateway gw;
  sourcery::http::gateway operations; // with --operations
  // Declared down by its cluster, or a tree that gave up: stop serving and exit non-zero, so the process
  // supervisor (systemd, Kubernetes) starts a fresh one.
  config.on_failure = [&gw](const caf::error&) { gw.request_stop(); };
  auto app = sourcery::application::start(config, todo::routes());
  if (!app) {
    std::fprintf(stderr, "todo-server: cannot start on %s: %s\n", demo::store_location(config).c_str(),
                 sourcery::describe_error(app.error()).c_str());
    return 1;
  }
  auto models = todo::start_read_model(**app);
  if (!models) {
    std::fprintf(stderr, "todo-server: cannot start the read model: %s\n",
                 sourcery::describe_error(models.error()).c_str());
    return 1;
  }
  todo::todo_api api{**app, **models};
  api.add_routes(gw);
  http.metrics = &(*app)->metrics();
  auto& todo_app = **app;
  auto err = serving.serve(gw, operations, http,
                           [&todo_app](sourcery::http::gateway& g) { sourcery::http::add_operations_routes(g, todo_app); });
  if (!err)
    err = gw.start(http);
  if (err) {
    operations.stop(); // before the application its routes use
    std::fprintf(stderr, "todo-server: %s\n", sourcery::describe_error(err).c_str());
    return 1;
  }
  gw.stop_on_signals();
  auto where = demo::store_location(config);
  std::printf("todo-server: listening on %s://%s:%u/todos (%s)\n", demo::serving_options::scheme(http),
              http.address.c_str(), gw.port(), where.c_str());
  serving.announce("todo-server", http);
  gw.wait();
  operations.stop();
  if (auto why = (*app)->failure()) {
    std::fprintf(stderr, "todo-server: %s\n", sourcery::describe_error(why).c_str());
    (*app)->stop();
    return 1;
  }
  std::printf("todo-server: stopping\n");
  (*app)->stop();
  return 0;
}
