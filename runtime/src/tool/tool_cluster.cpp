// `sourcery cluster`: the members of each cluster on a PostgreSQL store,
// with their state, the shards each holds and the handlers each runs, as
// the store's membership and lease tables say (the cluster's source of
// truth). Reads only.

#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "sourcery/config.hpp"
#if SOURCERY_WITH_POSTGRES
#include "sourcery/persistence/postgres_coordination.hpp"
#endif
#include "sourcery/runtime/cluster/placement.hpp"
#include "tool_context.hpp"

namespace sourcery::tool {

#if SOURCERY_WITH_POSTGRES
namespace {

using json = nlohmann::json;

struct cluster_view {
  std::string name;
  std::vector<persistence::member_info> members;
  std::map<std::string, size_t> shards_of;        // owner (node#incarnation) -> live shard leases
  std::vector<persistence::lease_info> handlers;  // live handler leases
  size_t expired = 0;                             // leases past their time
};

caf::expected<cluster_view> view_of(persistence::postgres_coordination& c, const std::string& name) {
  cluster_view v;
  v.name = name;
  auto members = c.members(name);
  if (!members)
    return members.error();
  v.members = std::move(*members);
  auto leases = c.leases(name);
  if (!leases)
    return leases.error();
  for (auto& l : *leases) {
    if (l.left.count() == 0) {
      ++v.expired;
      continue;
    }
    if (l.name.rfind("shard:", 0) == 0)
      ++v.shards_of[l.owner];
    else if (l.name.rfind("handler:", 0) == 0)
      v.handlers.push_back(l);
  }
  return v;
}

/// The shards a member's current incarnation holds (leases are owned by
/// `node#incarnation`).
size_t shards_of(const cluster_view& v, const persistence::member_info& m) {
  auto i = v.shards_of.find(persistence::lease_owner(m.node, m.incarnation));
  return i == v.shards_of.end() ? 0 : i->second;
}

json to_json(const cluster_view& v) {
  json members = json::array();
  for (auto& m : v.members)
    members.push_back({{"node", m.node},
                       {"state", m.state},
                       {"incarnation", m.incarnation},
                       {"since_renewal_ms", m.since_renewal.count()},
                       {"shards", shards_of(v, m)}});
  json handlers = json::array();
  for (auto& h : v.handlers)
    handlers.push_back({{"handler", h.name.substr(8)}, {"node", persistence::node_of_owner(h.owner)}, {"epoch", h.epoch}, {"lease_left_ms", h.left.count()}});
  return {{"cluster", v.name}, {"members", members}, {"handlers", handlers}, {"expired_leases", v.expired}};
}

void print_text(const cluster_view& v) {
  std::printf("cluster %s\n", v.name.c_str());
  std::printf("  %-24s %-6s %11s %12s %7s\n", "member", "state", "incarnation", "renewed", "shards");
  for (auto& m : v.members) {
    auto shards = shards_of(v, m);
    std::printf("  %-24s %-6s %11lld %9lld ms %7zu\n", m.node.c_str(), m.state.c_str(),
                static_cast<long long>(m.incarnation), static_cast<long long>(m.since_renewal.count()), shards);
  }
  if (v.handlers.empty())
    std::printf("  handlers: none running\n");
  for (auto& h : v.handlers)
    std::printf("  handler %-28s on %s (epoch %lld, lease %lld ms left)\n", h.name.substr(8).c_str(),
                persistence::node_of_owner(h.owner).c_str(),
                static_cast<long long>(h.epoch), static_cast<long long>(h.left.count()));
  if (v.expired > 0)
    std::printf("  %zu expired leases (waiting for a new owner)\n", v.expired);
}

} // namespace

int run_cluster(const context& ctx) {
  auto uri = ctx.uri();
  if (!uri.is_postgres())
    return failure(ctx, "cluster: a cluster keeps its members and leases in PostgreSQL; give --store postgresql://...");
  persistence::coordination_options opts;
  opts.conninfo = uri.location;
  opts.schema = uri.schema;
  opts.connect_timeout = uri.connect_timeout;
  opts.operation_timeout = uri.operation_timeout;
  opts.setup = persistence::schema_setup::none; // an operator looks; nothing is written
  auto c = persistence::postgres_coordination::open(opts);
  if (!c)
    return store_failure(ctx, "cluster", c.error());
  std::vector<std::string> names;
  if (!ctx.opts.cluster.empty()) {
    names.push_back(ctx.opts.cluster);
  } else {
    auto all = (*c)->clusters();
    if (!all)
      return store_failure(ctx, "list clusters", all.error());
    names = std::move(*all);
  }
  if (names.empty() && !ctx.opts.json)
    std::printf("no cluster has run on %s\n", ctx.where().c_str());
  for (auto& name : names) {
    auto v = view_of(**c, name);
    if (!v)
      return store_failure(ctx, "read cluster " + name, v.error());
    if (ctx.opts.json)
      std::printf("%s\n", to_json(*v).dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    else
      print_text(*v);
  }
  return 0;
}

#else
int run_cluster(const context& ctx) {
  return failure(ctx, "cluster: this build of Sourcery has no PostgreSQL store, where clusters live"
                      " (built with -DSOURCERY_WITH_POSTGRES=OFF)");
}
#endif

} // namespace sourcery::tool
