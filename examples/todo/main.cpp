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

const char* const routes_help =
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
  sourcery::http::gateway_config http;
  CLI::App cli{"The Todo-Backend API (todobackend.com), event-sourced.", "todo-server"};
  demo::demo_options options{cli, config, "todo-data"};
  cli.add_option("--port", http.port, "the HTTP port (0: any free port)")->capture_default_str();
  cli.add_option("--address", http.address, "the HTTP address (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    ->capture_default_str();
  cli.footer(std::string{routes_help} + "\ntodo-server admin COMMAND ...: the operator tool (`todo-server admin --help`).\n");
  options.parse(cli, argc, argv, config);

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
