// Sourcery::cluster from an installed prefix: a node's registration is
// built, and a node on a store the nodes cannot share refuses to start,
// saying why.
#include <cstdio>

#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/cluster/node_registration.hpp"

namespace {

struct noted {
  std::string text;
  SOURCERY_EVENT("check.noted", text)
};
struct note {
  std::string id, text;
  SOURCERY_FIELDS(id, text)
};
struct notebook {
  using event = std::variant<noted>;
  sourcery::outcome<event> execute(const note& c) const { return noted{c.text}; }
  void apply(const noted&) {}
};

} // namespace

int main() {
  sourcery::cluster::cluster_settings cluster;
  cluster.name = "check";
  cluster.node = "127.0.0.1:7999";
  sourcery::application_config config;
  config.in_memory = true;
  config.registration = sourcery::cluster::node_registration(cluster);
  sourcery::router routes;
  routes.aggregate<notebook>([](const note& c) { return c.id; }, "notebook-").dispatch<note>();
  auto app = sourcery::application::start(config, std::move(routes));
  if (app) {
    std::fprintf(stderr, "node_check: a cluster node started on memory:\n");
    return 1;
  }
  std::printf("node_check: refused as it should: %s\n", sourcery::describe_error(app.error()).c_str());
  return 0;
}
