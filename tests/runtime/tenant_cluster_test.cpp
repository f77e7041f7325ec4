// Tenants in a cluster: two application_hosts in this process are two
// nodes of one cluster on a real PostgreSQL server, over CAF's middleman on
// loopback. Each host joins once (its node); every tenant's aggregates run
// on the owner of their shard, whichever node the command was dispatched
// on; a node that receives a command for a tenant it has not opened opens
// it; each tenant's projection runs on one node; every tenant's writes are
// fenced with the node's leases; a node that leaves hands its share over.

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "../../examples/todo/todo_tenants.hpp"
#include "../support/checked.hpp"
#include "../support/eventually.hpp"
#include "../support/free_port.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/cluster/node_registration.hpp"
#include "sourcery/runtime/tenants/application_host.hpp"

using namespace sourcery;
using namespace std::chrono_literals;
using sourcery::testing::checked;
using sourcery::testing::eventually;
using sourcery::testing::run_sql;

namespace {

struct tenant_cluster : ::testing::Test {
  sourcery::testing::temp_dir dir;
  const std::string store = sourcery::testing::test_pg_store(dir); // the nodes' own schema
  const std::string suffix = std::to_string(std::hash<std::string>{}(dir.str()) % 100000);
  std::vector<std::unique_ptr<application_host>> hosts;
  std::set<std::string> tenants;

  application_host& add_node(std::chrono::milliseconds idle = std::chrono::minutes{5}) {
    auto cfg = todo::tenants_config(store);
    cfg.idle_timeout = idle;
    sourcery::cluster::cluster_settings s;
    s.name = "todo";
    s.node = "127.0.0.1:" + std::to_string(sourcery::testing::free_port());
    s.shards = 64;
    cfg.base.registration = sourcery::cluster::node_registration(s);
    cfg.base.scheduler_threads = 1;
    hosts.push_back(checked(application_host::start(std::move(cfg)), "start a node of tenants"));
    return *hosts.back();
  }

  /// A tenant's name unique to this test (their schemas are the database's).
  std::string tenant(const std::string& name) {
    auto t = name + "-" + suffix;
    tenants.insert(t);
    return t;
  }
  static std::string schema_of(std::string t) {
    std::replace(t.begin(), t.end(), '-', '_');
    return "tenant_" + t;
  }
  std::string uri() const { return sourcery::testing::test_pg_uri(); }
  std::string sql(const std::string& q) const { return run_sql(uri(), q); }

  /// Every live node sees them all, and together they own every shard.
  bool settled(size_t members) const {
    size_t owned = 0;
    for (auto& h : hosts) {
      if (!h)
        continue;
      auto p = h->node()->placement();
      if (p.members != members || p.shards_owned == 0)
        return false;
      owned += p.shards_owned;
    }
    return owned == 64;
  }

  static std::vector<std::string> ids(const std::vector<todo::todo_row>& rows) {
    std::vector<std::string> out;
    for (auto& r : rows)
      out.push_back(r.id);
    std::sort(out.begin(), out.end());
    return out;
  }

  void TearDown() override {
    for (auto& h : hosts)
      if (h)
        h->stop();
    hosts.clear();
    for (auto& t : tenants)
      run_sql(uri(), "DROP SCHEMA IF EXISTS " + schema_of(t) + " CASCADE");
  }
};

TEST_F(tenant_cluster, tenants_share_the_nodes_placement_links_and_leases_and_each_sees_only_its_own) {
  auto& a = add_node();
  auto& b = add_node();
  ASSERT_TRUE(eventually([&] { return settled(2); }, 20s)) << "two nodes, 64 shards between them";

  const auto acme = tenant("acme");
  const auto globex = tenant("globex");
  auto on_a = checked(a.open(acme));

  // Strong: answered once the tenant's projection (on whichever node
  // runs it) has the todo.
  std::vector<std::string> made;
  for (int i = 0; i < 40; ++i) {
    auto id = "t" + std::to_string(i);
    auto r = checked(on_a->app().dispatch(todo::create_todo{id, "todo " + id}, todo::todo_api::strong()));
    ASSERT_TRUE(r.accepted) << id;
    made.push_back(id);
  }
  std::sort(made.begin(), made.end());
  auto rows = on_a->state<todo::todo_api>()->rows();
  ASSERT_TRUE(rows);
  EXPECT_EQ(ids(*rows), made) << "a strong dispatch is answered once the projection has it";

  // b ran the commands for the shards it owns (and perhaps acme's
  // projection): it opened acme by itself.
  const auto open_on_b = [&] {
    auto open = b.open_tenants();
    return std::find(open.begin(), open.end(), acme) != open.end();
  };
  EXPECT_TRUE(eventually(open_on_b, 10s)) << "a command for acme reached b, which opened it";
  auto a_node = a.node()->placement().node;
  auto b_node = b.node()->placement().node;
  auto writers = sql("SELECT string_agg(DISTINCT split_part(owner, '#', 1), ',' ORDER BY split_part(owner, '#', 1))"
                     " FROM " + schema_of(acme) + ".cluster_writes");
  EXPECT_EQ(writers, std::min(a_node, b_node) + "," + std::max(a_node, b_node))
    << "acme's events were appended by both nodes, each for the shards it owns";
  EXPECT_EQ(sql("SELECT count(*) FROM " + schema_of(acme) + ".events"), "40") << "each command ran once";
  // Fenced with the node's leases: acme's own schema holds none.
  EXPECT_EQ(sql("SELECT count(*) FROM " + schema_of(acme) + ".cluster_leases"), "0");
  EXPECT_EQ(sql("SELECT count(*) FROM " + schema_of(acme) + ".cluster_members"), "0") << "one membership";

  // Its projection runs on one node, under the tenant's own lease.
  auto projection_lease = "handler:" + acme + "/" + std::string{todo::todo_list::projection_name};
  EXPECT_TRUE(eventually(
    [&] {
      return sql("SELECT count(*) FROM " + sourcery::testing::test_schema(dir) + ".cluster_leases WHERE name = '"
                 + projection_lease + "' AND expires_at > now()")
             == "1";
    },
    10s));

  // Another tenant, dispatched on b: its own todos only, and acme's are not its.
  auto on_b = checked(b.open(globex));
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(checked(on_b->app().dispatch(todo::create_todo{"g" + std::to_string(i), "globex's"},
                                             todo::todo_api::strong()))
                  .accepted);
  auto globex_rows = on_b->state<todo::todo_api>()->rows();
  ASSERT_TRUE(globex_rows);
  EXPECT_EQ(ids(*globex_rows), (std::vector<std::string>{"g0", "g1", "g2", "g3", "g4"}));
  auto acme_on_b = checked(b.open(acme));
  auto acme_rows = acme_on_b->state<todo::todo_api>()->rows();
  ASSERT_TRUE(acme_rows);
  EXPECT_EQ(ids(*acme_rows), made) << "acme read on b: the same list, without globex's";
  EXPECT_EQ(sql("SELECT count(*) FROM " + schema_of(globex) + ".events"), "5");

  // A command to an existing todo, from either node, runs on its owner.
  const std::pair<sourcery::tenant*, std::string> renamers[] = {{on_a.get(), "renamed on a"}, {acme_on_b.get(), "renamed on b"}};
  for (auto& [on, title] : renamers)
    for (auto& id : made)
      ASSERT_TRUE(checked(on->app().dispatch(todo::update_todo{id, title, {}, {}})).accepted) << id;
  EXPECT_EQ(sql("SELECT count(*) FROM " + schema_of(acme) + ".events"), "120");
  // Versions per stream are contiguous: no command ran twice or raced another node.
  EXPECT_EQ(sql("SELECT count(*) FROM (SELECT stream_id FROM " + schema_of(acme)
                + ".events GROUP BY stream_id HAVING max(stream_version) <> count(*) OR count(*) <> 3) x"),
            "0");
}

TEST_F(tenant_cluster, when_a_node_leaves_the_other_serves_every_tenant_and_runs_its_projection) {
  auto& a = add_node();
  add_node();
  ASSERT_TRUE(eventually([&] { return settled(2); }, 20s));
  const auto acme = tenant("acme");
  std::vector<std::string> made;
  {
    auto on_a = checked(a.open(acme));
    for (int i = 0; i < 20; ++i) {
      made.push_back("t" + std::to_string(i));
      ASSERT_TRUE(checked(on_a->app().dispatch(todo::create_todo{made.back(), "x"}, todo::todo_api::strong())).accepted);
    }
  }
  std::sort(made.begin(), made.end());
  // A clean leave: a's shards and acme's projection, wherever they ran, are b's.
  hosts[0]->stop();
  hosts[0].reset();
  ASSERT_TRUE(eventually([&] { return settled(1); }, 20s)) << "b owns every shard";
  auto& b = *hosts[1];
  auto on_b = checked(b.open(acme));
  for (auto& id : made)
    ASSERT_TRUE(checked(on_b->app().dispatch(todo::update_todo{id, {}, true, {}}, todo::todo_api::strong())).accepted)
      << id;
  auto rows = on_b->state<todo::todo_api>()->rows();
  ASSERT_TRUE(rows);
  EXPECT_EQ(ids(*rows), made);
  for (auto& r : *rows)
    EXPECT_TRUE(r.completed) << r.id << ": the projection runs on b now";
}

// Idle tenants close, but not where one of their consumers runs: closed
// there, the nodes that use the tenant would have it opened again at once.
TEST_F(tenant_cluster, a_tenant_stays_open_where_its_projection_runs_and_closes_where_idle) {
  auto& a = add_node(400ms);
  auto& b = add_node(400ms);
  ASSERT_TRUE(eventually([&] { return settled(2); }, 20s));
  const auto acme = tenant("acme");
  {
    auto on_a = checked(a.open(acme));
    for (int i = 0; i < 20; ++i) // over both nodes' shards: b opens acme too
      ASSERT_TRUE(checked(on_a->app().dispatch(todo::create_todo{"t" + std::to_string(i), "x"})).accepted);
  }
  const auto lease_owner = [&] {
    return sql("SELECT split_part(owner, '#', 1) FROM " + sourcery::testing::test_schema(dir)
               + ".cluster_leases WHERE name = 'handler:" + acme + "/" + todo::todo_list::projection_name
               + "' AND expires_at > now()");
  };
  const auto open_on = [&](application_host& h) {
    auto open = h.open_tenants();
    return std::find(open.begin(), open.end(), acme) != open.end();
  };
  // Unused, acme closes on the node without its projection, and stays open
  // on the one running it.
  ASSERT_TRUE(eventually([&] { return open_on(a) != open_on(b); }, 10s))
    << "a: " << open_on(a) << ", b: " << open_on(b);
  auto& running = open_on(a) ? a : b;
  EXPECT_EQ(lease_owner(), running.node()->placement().node) << "the node keeping acme open runs its projection";
  // Through four idle timeouts, it never closes there.
  EXPECT_FALSE(eventually([&] { return !open_on(running); }, 1600ms)) << "closed while its projection ran there";
}

TEST_F(tenant_cluster, a_host_refuses_a_cluster_without_a_postgresql_store) {
  auto cfg = todo::tenants_config("lmdb:" + dir.str());
  sourcery::cluster::cluster_settings s;
  s.name = "todo";
  s.node = "127.0.0.1:" + std::to_string(sourcery::testing::free_port());
  cfg.base.registration = sourcery::cluster::node_registration(s);
  auto host = application_host::start(std::move(cfg));
  ASSERT_FALSE(host);
  EXPECT_NE(describe_error(host.error()).find("PostgreSQL"), std::string::npos) << describe_error(host.error());
}

} // namespace
