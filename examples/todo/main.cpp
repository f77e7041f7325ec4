// todo-server — the Todo-Backend API (todobackend.com), event-sourced.
//
//   todo-server [--port N] [--address A] [--store URI] [--data-dir DIR] [--in-memory]
//               [--cluster NAME --node HOST:PORT]
//   todo-server admin COMMAND ...   the operator tool, with the todo list projection
//
// Serves /todos on LMDB in DIR (default ./todo-data) until SIGINT or SIGTERM,
// then drains the requests in flight and stops. Restarted on the same
// directory, it serves the same todos. /health and /metrics are for operators.
// With --cluster, several servers on one PostgreSQL store serve one todo
// list: each todo's commands run on the node owning it, the list's
// projection on one node of the cluster.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../common/narrate.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/http/gateway.hpp"
#include "sourcery/runtime/tool/operator_tool.hpp"
#include "todo_api.hpp"

namespace {

const char* const usage =
  "usage: todo-server [--port N] [--address A] [--store URI] [--cluster NAME --node HOST:PORT]\n"
  "       todo-server admin COMMAND ...   the operator tool (`todo-server admin --help`)\n"
  "\n"
  "  --port N           the HTTP port (default 8080; 0: any free port)\n"
  "  --address A        the HTTP address (default 127.0.0.1: this machine only; 0.0.0.0: every interface)\n"
  "  --store URI        where the events live (default: lmdb:todo-data, or SOURCERY_STORE);\n"
  "                     --data-dir DIR and --in-memory are short for lmdb:DIR and memory:\n"
  "  --cluster NAME     run as a node of cluster NAME (a PostgreSQL store)\n"
  "  --node HOST:PORT   this node's address in the cluster\n"
  "\n"
  "routes (the Todo-Backend API, todobackend.com; JSON bodies, Content-Type: application/json):\n"
  "  GET    /todos          every todo, in creation order                 200\n"
  "  POST   /todos          {\"title\", \"completed\"?, \"order\"?}           201 | 400 | 415 | 422\n"
  "  DELETE /todos          deletes every todo                            204\n"
  "  GET    /todos/{id}     one todo                                      200 | 404\n"
  "  PATCH  /todos/{id}     {\"title\"?, \"completed\"?, \"order\"?}          200 | 404 | 415 | 422\n"
  "  DELETE /todos/{id}     deletes one todo                              204 | 404\n"
  "  GET    /health         the server's state (503 while it cannot write); GET /metrics: Prometheus\n";

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "admin") == 0) {
    sourcery::operator_tool tool{"todo-server admin"};
    tool.default_data_dir("todo-data").add_routes(todo::routes());
    tool.add_projection<todo::todo_list>("the todo list served at /todos");
    return tool.run(argc - 1, argv + 1);
  }
  sourcery::application_config config;
  config.data_dir = "todo-data";
  sourcery::http::gateway_config http;
  demo::store_options store{"todo-server"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool has_value = i + 1 < argc;
    if (a == "--port" && has_value) {
      auto port = demo::parse_port(argv[++i]);
      if (!port) {
        std::fprintf(stderr, "todo-server: --port takes a number from 0 to 65535\n");
        return 2;
      }
      http.port = *port;
    } else if (a == "--address" && has_value) {
      http.address = argv[++i];
    } else if (store.take(argc, argv, i, config)) {
    } else if (a == "--cluster" && has_value) {
      config.cluster.name = argv[++i];
    } else if (a == "--node" && has_value) {
      config.cluster.node = argv[++i];
    } else {
      bool help = a == "--help" || a == "-h";
      std::fprintf(help ? stdout : stderr, "%s", usage);
      return help ? 0 : 2;
    }
  }

  store.finish(config);
  demo::check_cluster_options(config, "todo-server");

  sourcery::http::gateway gw;
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
  sourcery::http::add_operations_routes(gw, **app);
  http.metrics = &(*app)->metrics();
  if (auto err = gw.start(http)) {
    std::fprintf(stderr, "todo-server: %s\n", sourcery::describe_error(err).c_str());
    return 1;
  }
  gw.stop_on_signals();
  auto where = demo::store_location(config);
  std::printf("todo-server: listening on http://%s:%u/todos (%s)\n", http.address.c_str(), gw.port(),
              where.c_str());
  std::fflush(stdout);
  gw.wait();
  if (auto why = (*app)->failure()) {
    std::fprintf(stderr, "todo-server: %s\n", sourcery::describe_error(why).c_str());
    (*app)->stop();
    return 1;
  }
  std::printf("todo-server: stopping\n");
  (*app)->stop();
  return 0;
}
