// Applications as nodes of one cluster, in this process, on a real
// PostgreSQL server and CAF's middleman on loopback: commands dispatched on
// any node run once on the node owning their aggregate and are answered
// where they were dispatched; every shard has one owner; a clean leave
// hands the shards over without waiting for leases to run out; handlers,
// projections and process managers run on one node, and strong dispatches
// on every node wait for them. (Crashes, pauses and cut links, which need
// separate processes, are in tests/examples/cluster_test.cpp.)

#include <algorithm>
#include <atomic>
#include <future>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "../../examples/bank/balances.hpp"
#include "../../examples/bank/routes.hpp"
#include "../../examples/bank/transfer_saga.hpp"
#include "../support/checked.hpp"
#include "../support/eventually.hpp"
#include "../support/free_port.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "../support/test_ca.hpp"
#include "sourcery/persistence/postgres_coordination.hpp"
#include "sourcery/persistence/postgres_projection_store.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/cluster/node_registration.hpp"
#include "sourcery/runtime/cluster/placement.hpp"
// The link's wire messages: an intruder speaks them as a node would.
#include "../../runtime/src/cluster/node_link.hpp"

#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

using sourcery::testing::free_port;
using sourcery::testing::eventually;


/// A node of cluster "bank" at `node` (default: a free loopback port).
std::shared_ptr<const sourcery::registration_provider> bank_node(std::string node = {}, uint32_t shards = 64) {
  sourcery::cluster::cluster_settings s;
  s.name = "bank";
  s.node = node.empty() ? "127.0.0.1:" + std::to_string(free_port()) : std::move(node);
  s.shards = shards;
  return sourcery::cluster::node_registration(s);
}

struct cluster_of_nodes : ::testing::Test {
  sourcery::testing::temp_dir dir;
  std::vector<std::unique_ptr<application>> nodes;
  const std::string store = sourcery::testing::test_pg_store(dir); // created once, before any node

  std::string uri() const { return store; }

  application& add_node(std::shared_ptr<const sourcery::registration_provider> node = bank_node()) {
    application_config cfg;
    cfg.store_uri = uri();
    cfg.registration = std::move(node);
    cfg.scheduler_threads = 2;
    nodes.push_back(sourcery::testing::checked(application::start(cfg, routes()), "start a node"));
    return *nodes.back();
  }

  size_t shards_owned() const {
    size_t n = 0;
    for (auto& a : nodes)
      if (a)
        n += a->placement().shards_owned;
    return n;
  }

  /// Whether every live node sees them all and owns exactly the shards
  /// placement gives it: the moves of a join or leave are over (a cluster
  /// midway can look balanced for an instant: every node with a share,
  /// every shard held).
  bool balanced() const {
    std::vector<std::string> members;
    for (auto& a : nodes)
      if (a)
        members.push_back(a->placement().node);
    auto owners = sourcery::cluster::place_shards(members, 64);
    for (auto& a : nodes) {
      if (!a)
        continue;
      auto p = a->placement();
      if (p.members != members.size()
          || p.shards_owned != static_cast<size_t>(std::count(owners.begin(), owners.end(), p.node)))
        return false;
    }
    return true;
  }

  /// Waits (bounded) until the cluster is balanced.
  bool settled(std::chrono::milliseconds limit = 5s) {
    return eventually([&] { return balanced(); }, limit);
  }

  std::unique_ptr<persistence::postgres_coordination> coordination() {
    persistence::coordination_options c;
    c.conninfo = sourcery::testing::test_pg_uri();
    c.schema = sourcery::testing::test_schema(dir);
    auto opened = persistence::postgres_coordination::open(c);
    EXPECT_TRUE(opened);
    return opened ? std::move(*opened) : nullptr;
  }

  void TearDown() override {
    for (auto& n : nodes)
      if (n)
        n->stop();
  }
};

/// A sample's value in Prometheus text (0 when absent).
uint64_t metric(const std::string& text, const std::string& name) {
  auto at = text.find("\n" + name + " ");
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + name.size() + 2));
}

/// Every stream's versions 1..n, each event once.
void expect_contiguous(persistence::event_store& store, const std::string& stream, size_t n) {
  auto events = store.read_stream(stream, 1, 100'000);
  ASSERT_TRUE(events);
  ASSERT_EQ(events->size(), n) << stream;
  for (size_t i = 0; i < events->size(); ++i)
    EXPECT_EQ((*events)[i].stream_version, i + 1) << stream;
}

TEST_F(cluster_of_nodes, commands_run_once_on_their_owner_and_are_answered_where_dispatched) {
  for (int i = 0; i < 3; ++i)
    add_node();
  ASSERT_TRUE(settled()) << shards_owned();
  for (auto& n : nodes)
    EXPECT_EQ(n->placement().members, 3u);
  constexpr int accounts = 24, rounds = 5;
  for (int a = 0; a < accounts; ++a) {
    auto r = nodes[static_cast<size_t>(a) % 3]->dispatch(open_account{"a" + std::to_string(a), "x"});
    ASSERT_TRUE(r) << describe_error(r.error());
    ASSERT_TRUE(r->accepted);
  }
  // Every node dispatches deposits to every account at once: commands to
  // one aggregate stay serial wherever they come from.
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  for (size_t n = 0; n < 3; ++n)
    threads.emplace_back([&, n] {
      for (int r = 0; r < rounds; ++r)
        for (int a = 0; a < accounts; ++a) {
          dispatch_options o;
          o.returns = returning::version;
          auto d = nodes[n]->dispatch(deposit{"a" + std::to_string(a), 1}, o);
          if (d && d->accepted && d->version > 1)
            ++accepted;
          else
            ADD_FAILURE() << (d ? d->why.reason : describe_error(d.error()));
        }
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(accepted.load(), 3 * rounds * accounts);
  for (int a = 0; a < accounts; ++a) {
    auto id = "a" + std::to_string(a);
    expect_contiguous(nodes[0]->store(), "account-" + id, 1 + 3 * rounds);
    auto state = nodes[1]->aggregate_state<account>("account-" + id);
    ASSERT_TRUE(state);
    EXPECT_EQ(state->balance, 3 * rounds);
  }
  uint64_t forwarded = 0, served = 0;
  for (auto& n : nodes) {
    auto text = n->metrics_text();
    EXPECT_NE(text.find("sourcery_cluster_members 3"), std::string::npos);
    for (auto* what : {"batch", "nudge", "unknown"}) // members that had just joined were verified, not refused
      EXPECT_NE(text.find(std::string{"sourcery_cluster_refused_total{what=\""} + what + "\"} 0"), std::string::npos)
        << text;
    forwarded += metric(text, "sourcery_cluster_commands_forwarded_total");
    served += metric(text, "sourcery_cluster_commands_served_total");
  }
  EXPECT_GT(forwarded, 0u) << "a third of the commands belong to each node";
  EXPECT_EQ(forwarded, served);
  // The lease table agrees: every shard held, by a live member.
  auto c = coordination();
  ASSERT_TRUE(c);
  auto leases = c->leases("bank");
  ASSERT_TRUE(leases);
  std::set<std::string> owners;
  size_t shards = 0;
  for (auto& l : *leases)
    if (l.name.rfind("shard:", 0) == 0 && l.left.count() > 0) {
      ++shards;
      owners.insert(persistence::node_of_owner(l.owner));
    }
  EXPECT_EQ(shards, 64u);
  EXPECT_EQ(owners.size(), 3u);
}

TEST_F(cluster_of_nodes, a_clean_leave_hands_every_shard_over_at_once) {
  for (int i = 0; i < 3; ++i)
    add_node();
  ASSERT_TRUE(settled());
  for (int a = 0; a < 12; ++a)
    ASSERT_TRUE(nodes[0]->dispatch(open_account{"l" + std::to_string(a), "x"}));
  auto leaving = nodes[2]->placement().shards_owned;
  ASSERT_GT(leaving, 0u);
  auto t0 = std::chrono::steady_clock::now();
  nodes[2]->stop();
  nodes[2].reset();
  ASSERT_TRUE(settled(3s));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 2s) << "the leases were released, not left to expire (which takes down_after, 2.5 s)";
  for (int a = 0; a < 12; ++a) {
    auto r = nodes[a % 2]->dispatch(deposit{"l" + std::to_string(a), 5});
    ASSERT_TRUE(r) << describe_error(r.error());
    EXPECT_TRUE(r->accepted);
  }
  for (auto& n : nodes)
    if (n) {
      EXPECT_EQ(n->placement().members, 2u);
    }
  // And a join takes its share back while commands keep being answered.
  add_node();
  ASSERT_TRUE(settled());
  for (int a = 0; a < 12; ++a) {
    auto r = nodes[3]->dispatch(deposit{"l" + std::to_string(a), 1});
    ASSERT_TRUE(r) << describe_error(r.error());
    EXPECT_TRUE(r->accepted);
    expect_contiguous(nodes[0]->store(), "account-l" + std::to_string(a), 3);
  }
}

TEST_F(cluster_of_nodes, a_node_declared_down_stops_serving_and_joins_again_by_itself) {
  for (int i = 0; i < 2; ++i)
    add_node();
  ASSERT_TRUE(settled());
  for (int a = 0; a < 8; ++a)
    ASSERT_TRUE(nodes[1]->dispatch(open_account{"r" + std::to_string(a), "x"}));
  auto schema = sourcery::testing::test_schema(dir);
  auto incarnation = [&] {
    return sourcery::testing::run_sql(sourcery::testing::test_pg_uri(),
                                      "SELECT incarnation FROM " + schema + ".cluster_members WHERE node = '"
                                        + nodes[0]->placement().node + "'");
  };
  auto before = incarnation();
  // The others declare node 0 down (as they would after its silence).
  sourcery::testing::run_sql(sourcery::testing::test_pg_uri(), "UPDATE " + schema
                                                                  + ".cluster_members SET state = 'down' WHERE node = '"
                                                                  + nodes[0]->placement().node + "'");
  // It learns it at its next renewal, stops serving, joins again as a new
  // incarnation and takes its share back: no failure, no restart.
  auto until = std::chrono::steady_clock::now() + 10s;
  while (incarnation() == before && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  EXPECT_NE(incarnation(), before) << "it did not join again";
  ASSERT_TRUE(settled(10s)) << "node 0 holds " << nodes[0]->placement().shards_owned << " shards";
  EXPECT_FALSE(nodes[0]->failure()) << describe_error(nodes[0]->failure());
  EXPECT_FALSE(nodes[0]->outage()) << describe_error(nodes[0]->outage());
  EXPECT_TRUE(nodes[0]->running());
  for (int a = 0; a < 8; ++a) {
    auto r = nodes[0]->dispatch(deposit{"r" + std::to_string(a), 3});
    ASSERT_TRUE(r) << describe_error(r.error());
    EXPECT_TRUE(r->accepted);
    expect_contiguous(nodes[1]->store(), "account-r" + std::to_string(a), 2);
  }
}

TEST_F(cluster_of_nodes, a_node_with_another_shard_count_is_refused_while_the_cluster_runs) {
  add_node();
  ASSERT_TRUE(settled());
  application_config cfg;
  cfg.store_uri = uri();
  cfg.registration = bank_node({}, 32);
  cfg.scheduler_threads = 2;
  auto odd = application::start(cfg, routes());
  ASSERT_FALSE(odd);
  EXPECT_NE(describe_error(odd.error()).find("runs with 64 shards"), std::string::npos) << describe_error(odd.error());
  EXPECT_TRUE(settled()) << "the running node is untouched";
}

TEST(cluster_settings, only_loopback_addresses_count_as_loopback) {
  using sourcery::cluster::is_loopback_host;
  for (auto host : {"127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"})
    EXPECT_TRUE(is_loopback_host(host)) << host;
  for (auto host : {"10.0.0.5", "0.0.0.0", "128.0.0.1", "::", "example.com", "127.0.0.1.example.com", ""})
    EXPECT_FALSE(is_loopback_host(host)) << host;
}

// A member nudging in a loop costs at most one membership round per
// interval: nudges within it are taken together, at its end.
TEST(node_link, nudges_are_rate_limited_and_taken_together) {
  namespace link = sourcery::cluster::detail;
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::atomic<int> rounds{0};
  link::node_link_hooks hooks;
  hooks.node = "127.0.0.1:1";
  hooks.nudge_interval = 200ms;
  hooks.admits = [](const std::string& node, int64_t incarnation) { return node == "127.0.0.1:2" && incarnation == 3; };
  hooks.nudged = [&] { ++rounds; };
  std::atomic<int> refused{0};
  hooks.refused = [&](const char* what, const std::string& from, uint64_t count) {
    EXPECT_STREQ(what, "nudge");
    EXPECT_EQ(from, "127.0.0.1:2");
    refused += static_cast<int>(count);
  };
  auto l = link::spawn_node_link(sys, std::move(hooks));
  caf::anon_send(l, link::nudge_atom::value, std::string{"127.0.0.1:2"}, int64_t{2}); // an old incarnation
  ASSERT_TRUE(eventually([&] { return refused.load() == 1; }, 10s));
  EXPECT_EQ(rounds.load(), 0);
  auto burst = [&] {
    for (int i = 0; i < 100; ++i)
      caf::anon_send(l, link::nudge_atom::value, std::string{"127.0.0.1:2"}, int64_t{3});
  };
  burst();
  // The first nudge at once, the other 99 together at the interval's end.
  ASSERT_TRUE(eventually([&] { return rounds.load() >= 2; }, 10s));
  EXPECT_LE(rounds.load(), 3) << "100 nudges";
  burst();
  ASSERT_TRUE(eventually([&] { return rounds.load() >= 3; }, 10s));
  EXPECT_LE(rounds.load(), 6) << "200 nudges";
  caf::anon_send_exit(l, caf::exit_reason::user_shutdown);
}

TEST_F(cluster_of_nodes, a_node_off_loopback_without_insecure_links_refuses_to_start_and_says_why) {
  application_config cfg;
  cfg.store_uri = uri();
  cfg.registration = bank_node("10.0.0.5:7400");
  auto app = application::start(cfg, routes());
  ASSERT_FALSE(app);
  auto why = describe_error(app.error());
  EXPECT_NE(why.find("not a loopback address"), std::string::npos) << why;
  EXPECT_NE(why.find("--insecure-links"), std::string::npos) << why;
}

namespace {

/// A process that reaches `node`'s port and speaks the link's protocol, as
/// a node would (over TLS with `cfg`'s certificate when `tls`), but is not
/// an up member (or claims a member's name with another incarnation):
/// nothing it sends runs, each refusal is counted in /metrics, and the node
/// goes on serving.
void expect_a_non_member_refused(application& node, caf::actor_system_config& cfg, bool tls) {
  namespace link = sourcery::cluster::detail;
  auto address = sourcery::cluster::split_node_address(node.placement().node);
  ASSERT_TRUE(address) << node.placement().node;
  cfg.load<caf::io::middleman>();
  if (tls)
    cfg.load<caf::openssl::manager>();
  link::add_link_message_types(cfg);
  caf::actor_system intruder{cfg};
  auto peer = tls ? caf::openssl::remote_actor(intruder, address->first, address->second)
                  : intruder.middleman().remote_actor(address->first, address->second);
  ASSERT_TRUE(peer) << intruder.render(peer.error());

  auto command = [](const std::string& account) {
    command_envelope env;
    env.aggregate_type = type_name_of<bank::account>();
    env.stream_id = "account-" + account;
    env.command_type = type_name_of<bank::open_account>();
    msgpack::sbuffer buf;
    msgpack::pack(buf, bank::open_account{account, "mallory"});
    env.payload.assign(buf.data(), buf.data() + buf.size());
    env.deadline = std::chrono::steady_clock::now() + 10s;
    return env;
  };
  caf::scoped_actor self{intruder};
  auto refused = [&](std::string from, int64_t incarnation, const std::string& account) {
    link::forward_batch batch;
    batch.from = std::move(from);
    batch.incarnation = incarnation;
    batch.ids = {7};
    batch.envelopes = {command(account)};
    self->send(*peer, link::forward_atom::value, std::move(batch));
    bool answered = false;
    self->receive(
      [&](link::answer_atom, link::answer_batch& b) {
        ASSERT_EQ(b.answers.size(), 1u);
        EXPECT_FALSE(b.answers[0].ok);
        EXPECT_EQ(code_of_dispatch(b.answers[0].error), dispatch_errc::moved) << describe_error(b.answers[0].error);
        answered = true;
      },
      caf::after(10s) >> [] {});
    return answered;
  };
  EXPECT_TRUE(refused("127.0.0.1:1", 1, "mallory1")) << "a stranger";
  EXPECT_TRUE(refused(node.placement().node, 0, "mallory2")) << "the node's own name, another incarnation";
  self->send(*peer, link::nudge_atom::value, std::string{"127.0.0.1:1"}, int64_t{1});
  self->send(*peer, caf::atom("bogus"), std::string{"anything"}); // no node sends that

  auto counted = [&](const std::string& line) { return node.metrics_text().find(line) != std::string::npos; };
  EXPECT_TRUE(eventually([&] { return counted("sourcery_cluster_refused_total{what=\"batch\"} 2"); }, 10s))
    << node.metrics_text();
  EXPECT_TRUE(eventually([&] { return counted("sourcery_cluster_refused_total{what=\"nudge\"} 1"); }, 10s));
  EXPECT_TRUE(eventually([&] { return counted("sourcery_cluster_refused_total{what=\"unknown\"} 1"); }, 10s));
  for (auto* stream : {"account-mallory1", "account-mallory2"}) {
    auto events = node.store().read_stream(stream, 1, 10);
    ASSERT_TRUE(events) << describe_error(events.error());
    EXPECT_TRUE(events->empty()) << stream << " has events: a refused command ran";
  }
  auto served = node.dispatch(bank::open_account{"alice", "alice"});
  ASSERT_TRUE(served) << describe_error(served.error());
  EXPECT_TRUE(served->accepted) << "the node serves as before";
  EXPECT_EQ(node.metrics_text().find("commands_served_total 1"), std::string::npos) << "nothing was served for a peer";
}

} // namespace

TEST_F(cluster_of_nodes, a_peer_that_is_not_an_up_member_is_refused_counted_and_runs_nothing) {
  auto& node = add_node();
  ASSERT_TRUE(settled());
  caf::actor_system_config cfg;
  expect_a_non_member_refused(node, cfg, false);
}

TEST_F(cluster_of_nodes, batches_are_split_under_the_frame_limit_and_a_command_too_large_is_refused) {
  // A 64 KiB limit: a batch carries 32 KiB at most.
  auto small_frames = [] {
    sourcery::cluster::cluster_settings s;
    s.name = "bank";
    s.node = "127.0.0.1:" + std::to_string(free_port());
    s.max_frame_bytes = 64 * 1024;
    return sourcery::cluster::node_registration(s);
  };
  auto& a = add_node(small_frames());
  add_node(small_frames());
  ASSERT_TRUE(settled());
  // 300 accounts opened from node 0 at once, each command about 1 KiB: the
  // 200 or so owned by node 1 leave in several frames, none above the limit.
  constexpr int accounts = 300;
  std::atomic<int> accepted{0}, failed{0};
  std::string owner(1000, 'o');
  for (int i = 0; i < accounts; ++i)
    a.dispatch_async(open_account{"f" + std::to_string(i), owner}, {}, [&](caf::expected<dispatch_result> r) {
      if (r && r->accepted)
        ++accepted;
      else
        ++failed;
    });
  ASSERT_TRUE(eventually([&] { return accepted.load() + failed.load() == accounts; }, 30s));
  EXPECT_EQ(accepted.load(), accounts);
  auto text = a.metrics_text();
  EXPECT_GT(metric(text, "sourcery_cluster_commands_forwarded_total"), 50u);
  EXPECT_EQ(metric(text, "sourcery_cluster_frames_refused_total"), 0u) << "a frame of ours exceeded the limit";
  // One command larger than a frame's budget, for an account node 1 owns:
  // refused where it was dispatched, with nothing executed.
  auto owners = sourcery::cluster::place_shards({nodes[0]->placement().node, nodes[1]->placement().node}, 64);
  std::string remote;
  for (int i = 0; remote.empty(); ++i)
    if (auto id = "big" + std::to_string(i);
        owners[sourcery::cluster::shard_of("account-" + id, 64)] == nodes[1]->placement().node)
      remote = id;
  auto big = a.dispatch(open_account{remote, std::string(40 * 1024, 'x')});
  ASSERT_FALSE(big);
  EXPECT_EQ(code_of_dispatch(big.error()), dispatch_errc::too_large) << describe_error(big.error());
  auto events = a.store().read_stream("account-" + remote, 1, 10);
  ASSERT_TRUE(events);
  EXPECT_TRUE(events->empty()) << "nothing was executed";
  // The link still carries the rest.
  auto after = a.dispatch(deposit{"f1", 5});
  ASSERT_TRUE(after) << describe_error(after.error());
  EXPECT_TRUE(after->accepted);
}

TEST_F(cluster_of_nodes, handlers_run_on_one_node_and_strong_dispatches_wait_for_them_on_every_node) {
  for (int i = 0; i < 3; ++i) {
    auto& n = add_node();
    ASSERT_TRUE(n.add_projection<balances>({}, /*strong*/ true));
    ASSERT_TRUE(n.add_process_manager<transfer_saga>());
  }
  ASSERT_TRUE(settled());
  for (int a = 0; a < 6; ++a)
    ASSERT_TRUE(nodes[0]->dispatch(open_account{"h" + std::to_string(a), "x"}));
  // The read models as any client reads them (not a node's: nodes go).
  persistence::postgres_read_model_options ro;
  ro.conninfo = sourcery::testing::test_pg_uri();
  ro.schema = sourcery::testing::test_schema(dir);
  auto models = persistence::postgres_projection_store::open(ro);
  ASSERT_TRUE(models);
  for (size_t n = 0; n < 3; ++n)
    for (int a = 0; a < 6; ++a) {
      dispatch_options o;
      o.consistency_level = consistency::strong;
      auto r = nodes[n]->dispatch(deposit{"h" + std::to_string(a), 10}, o);
      ASSERT_TRUE(r) << describe_error(r.error());
      ASSERT_TRUE(r->accepted);
      // Answered once the projection, wherever it runs, has handled it.
      auto cp = (*models)->checkpoint(balances::projection_name);
      ASSERT_TRUE(cp && *cp);
      EXPECT_GE(**cp, r->last_position);
      auto row = (*models)->get(balances::projection_name, "balances", "account-h" + std::to_string(a));
      ASSERT_TRUE(row && *row);
      EXPECT_EQ(**row, std::to_string(10 * (n + 1)));
    }
  // Each consumer holds one lease, on one node.
  auto c = coordination();
  ASSERT_TRUE(c);
  auto leases = c->leases("bank");
  ASSERT_TRUE(leases);
  std::set<std::string> consumers;
  for (auto& l : *leases)
    if (l.name.rfind("handler:", 0) == 0 && l.left.count() > 0)
      consumers.insert(l.name);
  EXPECT_EQ(consumers, (std::set<std::string>{"handler:bank.balances", "handler:bank.transfers"}));
  // Transfers between accounts of different nodes: the saga, on one node,
  // moves the money once.
  for (int t = 0; t < 6; ++t)
    ASSERT_TRUE(nodes[static_cast<size_t>(t) % 3]->dispatch(
      request_transfer{"t" + std::to_string(t), "h" + std::to_string(t), "h" + std::to_string((t + 1) % 6), 7}));
  auto until = std::chrono::steady_clock::now() + 10s;
  int64_t total = 0;
  bool done = false;
  while (!done && std::chrono::steady_clock::now() < until) {
    done = true;
    for (int t = 0; t < 6; ++t) {
      auto s = nodes[0]->aggregate_state<transfer>("transfer-t" + std::to_string(t));
      done = done && s && s->at == transfer::stage::completed;
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(done) << "every transfer completes";
  for (int a = 0; a < 6; ++a) {
    auto s = nodes[1]->aggregate_state<account>("account-h" + std::to_string(a));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->balance, 30) << "each account sent 7 and received 7, once";
    total += s->balance;
  }
  EXPECT_EQ(total, 180);
  // The node running the projection leaves: another takes it over and
  // strong dispatches still wait for it.
  std::string runs_on;
  auto now = c->leases("bank");
  ASSERT_TRUE(now);
  for (auto& l : *now)
    if (l.name == "handler:bank.balances")
      runs_on = persistence::node_of_owner(l.owner);
  for (auto& n : nodes)
    if (n && n->placement().node == runs_on) {
      n->stop();
      n.reset();
    }
  for (auto& n : nodes) {
    if (!n)
      continue;
    dispatch_options o;
    o.consistency_level = consistency::strong;
    auto r = n->dispatch(deposit{"h0", 1}, o);
    ASSERT_TRUE(r) << describe_error(r.error());
    auto cp = (*models)->checkpoint(balances::projection_name);
    ASSERT_TRUE(cp && *cp);
    EXPECT_GE(**cp, r->last_position);
  }
}

TEST_F(cluster_of_nodes, refuses_a_store_nodes_cannot_share_a_bad_address_and_a_frame_limit_too_small) {
  application_config cfg;
  cfg.data_dir = dir.str();
  cfg.registration = bank_node();
  auto lmdb = application::start(cfg, routes());
  ASSERT_FALSE(lmdb);
  EXPECT_NE(describe_error(lmdb.error()).find("PostgreSQL"), std::string::npos);
  cfg.store_uri = uri();
  cfg.registration = bank_node("127.0.0.1");
  auto bad = application::start(cfg, routes());
  ASSERT_FALSE(bad);
  EXPECT_NE(describe_error(bad.error()).find("HOST:PORT"), std::string::npos);
  sourcery::cluster::cluster_settings tiny;
  tiny.name = "bank";
  tiny.node = "127.0.0.1:" + std::to_string(free_port());
  tiny.max_frame_bytes = 1000;
  cfg.registration = sourcery::cluster::node_registration(tiny);
  auto small = application::start(cfg, routes());
  ASSERT_FALSE(small);
  EXPECT_NE(describe_error(small.error()).find("max_frame_bytes must be at least 64 KiB"), std::string::npos)
    << describe_error(small.error());
}

} // namespace

// -- mutual TLS between nodes ------------------------------------------------------

namespace {

/// A node of cluster "bank" on a free loopback port, with TLS settings.
std::shared_ptr<const sourcery::registration_provider> tls_node(sourcery::cluster::tls_settings tls) {
  sourcery::cluster::cluster_settings s;
  s.name = "bank";
  s.node = "127.0.0.1:" + std::to_string(free_port());
  s.tls = std::move(tls);
  return sourcery::cluster::node_registration(s);
}

struct tls_cluster : cluster_of_nodes {
  sourcery::testing::test_ca ca{dir.str(), "cluster"};

  sourcery::cluster::tls_settings settings_for(const std::string& who) const {
    auto issued = ca.issue(who);
    return {issued.cert, issued.key, ca.cert()};
  }
};

/// Connects to `node` as a peer would, with `cfg`'s TLS settings (or
/// none); waits 20 s at most. The actor, or an error.
caf::expected<caf::actor> connect_as(caf::actor_system& sys, const std::string& node, bool tls) {
  auto address = sourcery::cluster::split_node_address(node);
  if (!address)
    return address.error();
  auto done = std::make_shared<std::promise<caf::expected<caf::actor>>>();
  auto result = done->get_future();
  std::thread{[&sys, host = address->first, port = address->second, tls, done] {
    done->set_value(tls ? caf::openssl::remote_actor(sys, host, port) : sys.middleman().remote_actor(host, port));
  }}.detach();
  if (result.wait_for(20s) != std::future_status::ready)
    return caf::make_error(caf::sec::request_timeout, "no answer to the handshake within 20 s");
  return result.get();
}

} // namespace

TEST_F(tls_cluster, nodes_with_certificates_of_the_cluster_ca_serve_each_other_over_mutual_tls) {
  add_node(tls_node(settings_for("node-a")));
  add_node(tls_node(settings_for("node-b")));
  ASSERT_TRUE(settled(15s)) << shards_owned();
  for (int a = 0; a < 24; ++a) {
    auto r = nodes[a % 2]->dispatch(open_account{"t" + std::to_string(a), "x"});
    ASSERT_TRUE(r) << describe_error(r.error());
    EXPECT_TRUE(r->accepted);
  }
  uint64_t forwarded = 0;
  for (auto& n : nodes)
    forwarded += metric(n->metrics_text(), "sourcery_cluster_commands_forwarded_total");
  EXPECT_GT(forwarded, 0u) << "commands crossed the TLS links";
  EXPECT_NE(nodes[0]->metrics_text().find("sourcery_cluster_members 2"), std::string::npos);
}

TEST_F(tls_cluster, a_node_with_a_certificate_the_ca_did_not_sign_or_half_its_files_refuses_to_start) {
  sourcery::testing::test_ca other{dir.str(), "other"};
  auto stranger = other.issue("stranger");
  application_config cfg;
  cfg.store_uri = uri();
  cfg.registration = tls_node({stranger.cert, stranger.key, ca.cert()});
  auto app = application::start(cfg, routes());
  ASSERT_FALSE(app);
  EXPECT_NE(describe_error(app.error()).find("not signed by the cluster's CA"), std::string::npos)
    << describe_error(app.error());
  auto mine = settings_for("half");
  cfg.registration = tls_node({mine.cert, "", mine.ca});
  app = application::start(cfg, routes());
  ASSERT_FALSE(app);
  EXPECT_NE(describe_error(app.error()).find("all three"), std::string::npos) << describe_error(app.error());
  cfg.registration = tls_node({mine.cert, ca.key(), mine.ca}); // another key
  app = application::start(cfg, routes());
  ASSERT_FALSE(app);
  EXPECT_NE(describe_error(app.error()).find("private key"), std::string::npos) << describe_error(app.error());
}

// Intruders at a TLS node's port: a plain peer, a TLS peer without a
// certificate (CAF then offers anonymous ciphers), one whose certificate
// another CA signed. Each is refused in the handshake: no link, nothing
// runs, and the node goes on serving.
TEST_F(tls_cluster, peers_without_a_certificate_of_the_cluster_ca_are_refused_in_the_handshake) {
  auto& node = add_node(tls_node(settings_for("node-a")));
  ASSERT_TRUE(settled());
  auto at = node.placement().node;
  {
    caf::actor_system_config cfg;
    cfg.load<caf::io::middleman>();
    caf::actor_system plain{cfg};
    auto peer = connect_as(plain, at, false);
    EXPECT_FALSE(peer) << "a plain peer got a link";
  }
  {
    caf::actor_system_config cfg;
    cfg.load<caf::io::middleman>();
    cfg.load<caf::openssl::manager>();
    caf::actor_system anonymous{cfg};
    auto peer = connect_as(anonymous, at, true);
    EXPECT_FALSE(peer) << "a peer without a certificate got a link";
  }
  {
    sourcery::testing::test_ca other{dir.str(), "other"};
    auto stranger = other.issue("stranger");
    caf::actor_system_config cfg;
    cfg.load<caf::io::middleman>();
    cfg.load<caf::openssl::manager>();
    cfg.openssl_certificate = stranger.cert;
    cfg.openssl_key = stranger.key;
    cfg.openssl_cafile = ca.cert(); // it trusts the node; the node must not trust it
    caf::actor_system foreign{cfg};
    auto peer = connect_as(foreign, at, true);
    EXPECT_FALSE(peer) << "a peer with another CA's certificate got a link";
  }
  auto served = node.dispatch(open_account{"alice", "alice"});
  ASSERT_TRUE(served) << describe_error(served.error());
  EXPECT_TRUE(served->accepted) << "the node serves as before";
  EXPECT_EQ(metric(node.metrics_text(), "sourcery_cluster_commands_served_total"), 0u);
}

// A peer whose certificate the cluster's CA did sign passes the handshake,
// but is no up member of the cluster: the same refusals as on plain links.
TEST_F(tls_cluster, a_peer_with_a_valid_certificate_that_is_not_a_member_is_refused_and_runs_nothing) {
  auto& node = add_node(tls_node(settings_for("node-a")));
  ASSERT_TRUE(settled());
  auto insider = settings_for("not-a-member");
  caf::actor_system_config cfg;
  cfg.openssl_certificate = insider.cert;
  cfg.openssl_key = insider.key;
  cfg.openssl_cafile = insider.ca;
  expect_a_non_member_refused(node, cfg, true);
}
