// The domain API declared once, through the application: per-aggregate
// settings (snapshots, lifespans, retries, default timeout and
// consistency), typed metadata from dispatch to handlers and across a saga
// hop, per-command saga decisions, handler init hooks, stream and category
// subscriptions, and the aggregate's identity in handler contexts.

#include <atomic>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "../../examples/bank/balances.hpp"
#include "../../examples/bank/routes.hpp"
#include "../../examples/bank/transfer_saga.hpp"
#include "../support/status_wait.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/faulty_store.hpp"
#include "sourcery/persistence/memory_store.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

using sourcery::testing::reaches;

std::unique_ptr<application> start(const std::string& dir, router routes,
                                   std::vector<std::shared_ptr<middleware>> mw = {},
                                   std::shared_ptr<persistence::event_store> store = nullptr) {
  application_config cfg;
  cfg.data_dir = dir;
  cfg.store = std::move(store);
  auto app = application::start(cfg, std::move(routes), std::move(mw));
  EXPECT_TRUE(app) << describe_error(app.error());
  return app ? std::move(*app) : nullptr;
}

/// The open actors of aggregate type `name`, as its subtree counts them.
size_t live_aggregates(application& app, const std::string& name) {
  auto kids = app.root().which_children();
  if (!kids)
    return 0;
  for (auto& k : *kids) {
    if (k.id != "aggregate:" + name || !k.actor)
      continue;
    auto sub = supervision::supervisor{app.system(), k.actor}.which_children();
    if (!sub)
      return 0;
    for (auto& s : *sub)
      if (s.id == "aggregates" && s.actor)
        if (auto c = supervision::supervisor{app.system(), s.actor}.count_children())
          return c->active;
  }
  return 0;
}

size_t wait_live(application& app, const std::string& name, size_t n, std::chrono::milliseconds limit = 3s) {
  auto until = std::chrono::steady_clock::now() + limit;
  auto live = live_aggregates(app, name);
  while (live != n && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(2ms);
    live = live_aggregates(app, name);
  }
  return live;
}

// -- settings on the declaration ------------------------------------------------------

TEST(declared_settings, snapshots_are_taken_at_the_declared_interval) {
  sourcery::testing::temp_dir dir;
  aggregate_settings accounts;
  accounts.snapshot_every = 3;
  auto app = start(dir.str(), routes(accounts));
  ASSERT_TRUE(app->dispatch(open_account{"s", "sam"}));
  for (int i = 0; i < 6; ++i)
    ASSERT_TRUE(app->dispatch(deposit{"s", 1}));
  // Version 7: snapshots at 3 and 6 (saved without waiting: poll briefly).
  std::optional<persistence::snapshot> snap;
  for (int i = 0; i < 500 && (!snap || snap->stream_version != 6); ++i) {
    auto s = app->store().load_snapshot("account-s");
    ASSERT_TRUE(s);
    snap = *s;
    std::this_thread::sleep_for(2ms);
  }
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->stream_version, 6u);
  EXPECT_EQ(snap->snapshot_version, account::snapshot_version);
  EXPECT_EQ(app->aggregate_state<account>("account-s")->balance, 6);
}

TEST(declared_settings, the_declared_lifespan_passivates_idle_aggregates) {
  sourcery::testing::temp_dir dir;
  aggregate_settings accounts;
  accounts.lifespan = lifespan::timeout(30ms);
  router r = routes(accounts);
  auto app = start(dir.str(), r);
  ASSERT_TRUE(app->dispatch(open_account{"l", "lea"}));
  ASSERT_TRUE(app->dispatch(request_transfer{"t1", "l", "m", 5}));
  EXPECT_EQ(wait_live(*app, "bank::account", 0), 0u) << "accounts passivate after 30 ms";
  EXPECT_EQ(live_aggregates(*app, "bank::transfer"), 1u) << "transfers keep the default lifespan (5 min)";
  auto again = app->dispatch(deposit{"l", 5});
  ASSERT_TRUE(again && again->accepted) << "reopened from the store";
  EXPECT_EQ(again->version, 2u);
}

TEST(declared_settings, the_retry_budget_bounds_conflict_retries) {
  sourcery::testing::temp_dir dir;
  auto store = std::make_shared<persistence::faulty_store>(std::make_shared<persistence::memory_store>());
  aggregate_settings accounts;
  accounts.max_retries = 2;
  auto app = start(dir.str(), routes(accounts), {}, store);
  ASSERT_TRUE(app->dispatch(open_account{"r", "rae"}));
  auto conflict = [] {
    return persistence::make_error(persistence::store_errc::wrong_expected_version, "another writer");
  };
  store->fail_appends(2, conflict());
  auto ok = app->dispatch(deposit{"r", 5});
  ASSERT_TRUE(ok) << describe_error(ok.error());
  EXPECT_TRUE(ok->accepted) << "two conflicts, two retries: within the budget";
  store->fail_appends(3, conflict());
  auto out = app->dispatch(deposit{"r", 5});
  ASSERT_FALSE(out);
  EXPECT_EQ(persistence::code_of(out.error()), persistence::store_errc::wrong_expected_version);
  EXPECT_NE(describe_error(out.error()).find("after 2 retries"), std::string::npos) << describe_error(out.error());
  EXPECT_EQ(app->aggregate_state<account>("account-r")->balance, 5);
}

TEST(declared_settings, the_declared_timeout_and_consistency_are_the_dispatch_defaults) {
  sourcery::testing::temp_dir dir;
  auto store = std::make_shared<persistence::faulty_store>(std::make_shared<persistence::memory_store>());
  aggregate_settings accounts;
  accounts.timeout = 100ms;
  accounts.consistency_level = consistency::strong;
  auto app = start(dir.str(), routes(accounts), {}, store);
  auto balances = app->add_projection<bank::balances>({}, /*strong*/ true);
  ASSERT_TRUE(balances);
  auto r = app->dispatch(open_account{"c", "cy"});
  ASSERT_TRUE(r && r->accepted);
  EXPECT_GE((*balances)->position(), r->last_position) << "strong by default: the projection has it";
  store->stop_answering();
  auto t0 = std::chrono::steady_clock::now();
  auto late = app->dispatch(deposit{"c", 1});
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(late);
  EXPECT_EQ(code_of_dispatch(late.error()), dispatch_errc::timeout);
  EXPECT_LT(took, 2s) << "the declared 100 ms, not the 5 s default";
  dispatch_options patient;
  patient.timeout = 5s; // options still win over the declaration
  std::thread resume{[&] {
    std::this_thread::sleep_for(300ms);
    store->resume();
  }};
  auto waited = app->dispatch(deposit{"c", 2}, patient);
  resume.join();
  ASSERT_TRUE(waited) << describe_error(waited.error());
}

TEST(declared_settings, an_aggregate_declared_twice_or_a_command_routed_twice_is_refused) {
  sourcery::testing::temp_dir dir;
  router r = routes();
  r.aggregate<account>([](const auto& c) { return c.account; }, "acct-");
  application_config cfg;
  cfg.in_memory = true;
  auto app = application::start(cfg, r);
  ASSERT_FALSE(app);
  EXPECT_EQ(code_of_dispatch(app.error()), dispatch_errc::invalid_route);
  EXPECT_NE(describe_error(app.error()).find("declared twice"), std::string::npos) << describe_error(app.error());
}

TEST(declared_settings, an_empty_identity_is_refused_before_any_aggregate_sees_it) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir.str(), routes());
  auto r = app->dispatch(deposit{"", 5});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::invalid_identity);
  EXPECT_EQ(app->store().head_position(), 0u);
}

// -- metadata as data ---------------------------------------------------------------

struct tag_user : middleware {
  caf::error before_dispatch(dispatch_context& ctx) override {
    if (!ctx.options.metadata.contains("user"))
      ctx.options.metadata.set("user", "middleware");
    ctx.options.metadata.set("seen_by_middleware", true);
    return {};
  }
};

/// Records, per position, the metadata and identity its events carried.
struct witness {
  std::mutex mtx;
  std::map<uint64_t, std::pair<metadata, std::string>> seen; // position -> (metadata, aggregate id)
  std::atomic<int> inits{0};
};

struct metadata_reader {
  static constexpr const char* handler_name = "test.metadata_reader";
  using event = std::variant<account_opened, money_deposited, money_withdrawn>;
  std::shared_ptr<witness> w;
  template <class E>
  void handle(const E&, const event_context& ctx) {
    std::lock_guard guard{w->mtx};
    w->seen[ctx.position] = {ctx.meta(), std::string{ctx.aggregate_id()}};
  }
};

TEST(metadata, typed_fields_go_from_dispatch_through_middleware_to_events_and_handlers) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir.str(), routes(), {std::make_shared<tag_user>()});
  auto w = std::make_shared<witness>();
  auto h = app->add_handler<metadata_reader>({}, false, [w] { return std::make_unique<metadata_reader>(metadata_reader{w}); });
  ASSERT_TRUE(h);
  dispatch_options opts;
  opts.metadata.set("user", "alice").set("request", int64_t{7}).set("urgent", false);
  auto r = app->dispatch(open_account{"m", "mo"}, opts);
  ASSERT_TRUE(r && r->accepted);
  ASSERT_TRUE(reaches(**h, r->last_position));
  std::lock_guard guard{w->mtx};
  auto& [meta, id] = w->seen.at(r->last_position);
  EXPECT_EQ(meta.get_string("user"), "alice") << "the caller's, kept by the middleware";
  EXPECT_EQ(meta.get_int("request"), 7);
  EXPECT_EQ(meta.get_bool("urgent"), false);
  EXPECT_EQ(meta.get_bool("seen_by_middleware"), true);
  EXPECT_EQ(id, "m") << "the aggregate's identity, without the prefix";
}

TEST(metadata, commands_of_a_saga_inherit_the_metadata_of_the_event_that_caused_them) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir.str(), routes());
  auto saga = app->add_process_manager<transfer_saga>();
  ASSERT_TRUE(saga);
  auto w = std::make_shared<witness>();
  auto h = app->add_handler<metadata_reader>({}, false, [w] { return std::make_unique<metadata_reader>(metadata_reader{w}); });
  ASSERT_TRUE(h);
  ASSERT_TRUE(app->dispatch(open_account{"a", "ann"}));
  ASSERT_TRUE(app->dispatch(open_account{"b", "ben"}));
  ASSERT_TRUE(app->dispatch(deposit{"a", 50}));
  dispatch_options opts;
  opts.metadata.set("user", "ann").set("tenant", int64_t{3});
  ASSERT_TRUE(app->dispatch(request_transfer{"t", "a", "b", 20}, opts));
  // The saga withdraws from a, deposits to b, completes the transfer.
  for (int i = 0; i < 2000 && app->aggregate_state<transfer>("transfer-t")->at != transfer::stage::completed; ++i)
    std::this_thread::sleep_for(2ms);
  ASSERT_EQ(app->aggregate_state<transfer>("transfer-t")->at, transfer::stage::completed);
  ASSERT_TRUE(reaches(**h, app->store().head_position()));
  int hops = 0;
  auto all = app->store().read_all(1, 100);
  ASSERT_TRUE(all);
  for (auto& ev : *all) {
    if (ev.type != "bank.money_withdrawn" && ev.type != "bank.money_deposited")
      continue;
    auto meta = metadata::decode_or_empty(ev.metadata);
    if (meta.get_string("user") != "ann")
      continue; // the first deposit, not the saga's
    EXPECT_EQ(meta.get_int("tenant"), 3);
    ++hops;
  }
  EXPECT_EQ(hops, 2) << "the withdrawal and the deposit the saga dispatched carry the request's metadata";
}

// -- process managers decide per command ------------------------------------------------

/// Fails `fail_left` times per stream, then executes: a flaky downstream.
struct flaky_counter {
  static inline std::atomic<int> fail_left{0};
};
struct poke {
  std::string target;
  SOURCERY_FIELDS(target)
};
struct poked {
  std::string target;
  SOURCERY_EVENT("test.poked", target)
};
struct pokeable {
  using event = std::variant<poked>;
  int pokes = 0;
  outcome<event> execute(const poke& c) const {
    if (c.target == "broken" || (c.target == "flaky" && flaky_counter::fail_left.fetch_sub(1) > 0))
      throw std::runtime_error("cannot be poked now");
    return poked{c.target};
  }
  void apply(const poked&) { ++pokes; }
};

/// On each opened account: poke "broken", "flaky" and "fine", one after
/// the other; what to do about a failure is its `decide_for`.
struct poker {
  static constexpr const char* process_name = "test.poker";
  using event = std::variant<account_opened>;
  std::string owner;
  MSGPACK_DEFINE_MAP(owner);
  static inline std::function<command_decision(const failed_command&)> decide_for;
  static inline std::atomic<int> failures_seen{0};

  static interest interested(const account_opened& e) { return interest::start(e.owner.value()); }
  commands handle(const account_opened&) const {
    return {command(poke{"broken"}), command(poke{"flaky"}), command(poke{"fine"})};
  }
  command_decision on_failure(const failed_command& f, const event_context&) {
    ++failures_seen;
    EXPECT_TRUE(f.error);
    EXPECT_NE(f.as<poke>(), nullptr);
    return decide_for(f);
  }
};

router poke_routes() {
  router r = routes();
  r.aggregate<pokeable>([](const poke& c) { return c.target; }, "pokeable-").dispatch<poke>();
  return r;
}

int pokes(application& app, const std::string& target) {
  auto s = app.aggregate_state<pokeable>("pokeable-" + target);
  return s ? s->pokes : -1;
}

TEST(saga_decisions, a_failed_command_is_skipped_and_the_others_still_go) {
  sourcery::testing::temp_dir dir;
  flaky_counter::fail_left = 0;
  poker::failures_seen = 0;
  poker::decide_for = [](const failed_command&) { return command_decision::skip(); };
  auto app = start(dir.str(), poke_routes());
  auto pm = app->add_process_manager<poker>();
  ASSERT_TRUE(pm);
  ASSERT_TRUE(app->dispatch(open_account{"p", "pat"}));
  ASSERT_TRUE(reaches(**pm, app->store().head_position()));
  for (int i = 0; i < 2000 && pokes(*app, "fine") < 1; ++i)
    std::this_thread::sleep_for(2ms);
  EXPECT_EQ(pokes(*app, "fine"), 1);
  EXPECT_EQ(pokes(*app, "flaky"), 1);
  EXPECT_EQ(poker::failures_seen.load(), 1) << "only the broken one failed, once";
  EXPECT_FALSE((*pm)->stopped());
}

TEST(saga_decisions, a_failed_command_is_retried_alone_after_its_delay) {
  sourcery::testing::temp_dir dir;
  flaky_counter::fail_left = 2;
  poker::failures_seen = 0;
  poker::decide_for = [](const failed_command& f) {
    return f.as<poke>()->target == "broken" ? command_decision::skip() : command_decision::retry(5ms);
  };
  auto app = start(dir.str(), poke_routes());
  auto pm = app->add_process_manager<poker>();
  ASSERT_TRUE(pm);
  ASSERT_TRUE(app->dispatch(open_account{"q", "quinn"}));
  for (int i = 0; i < 2000 && pokes(*app, "fine") < 1; ++i)
    std::this_thread::sleep_for(2ms);
  EXPECT_EQ(pokes(*app, "flaky"), 1) << "retried until it went through, once";
  EXPECT_EQ(pokes(*app, "fine"), 1);
  EXPECT_EQ(poker::failures_seen.load(), 3) << "broken once, flaky twice";
}

TEST(saga_decisions, a_failed_command_can_stop_the_process_manager) {
  sourcery::testing::temp_dir dir;
  flaky_counter::fail_left = 0;
  poker::failures_seen = 0;
  poker::decide_for = [](const failed_command&) { return command_decision::stop(); };
  auto app = start(dir.str(), poke_routes());
  auto pm = app->add_process_manager<poker>();
  ASSERT_TRUE(pm);
  ASSERT_TRUE(app->dispatch(open_account{"s", "sid"}));
  EXPECT_FALSE(reaches(**pm, app->store().head_position(), 5s) && !(*pm)->stopped());
  ASSERT_TRUE((*pm)->stopped());
  EXPECT_NE(describe_error((*pm)->stopped()).find("cannot be poked"), std::string::npos)
    << describe_error((*pm)->stopped());
  EXPECT_EQ(pokes(*app, "flaky"), 0) << "nothing after the stop";
}

// -- handlers: init, subscriptions ------------------------------------------------------

struct streams_seen {
  std::mutex mtx;
  std::vector<std::string> streams;
  std::atomic<int> inits{0};
};

/// Counts its starts and the streams of what it handles.
struct category_reader {
  static constexpr const char* handler_name = "test.category_reader";
  using event = std::variant<account_opened, money_deposited, transfer_requested>;
  static subscription subscribe_to() { return subscription::category("account-"); }
  std::shared_ptr<streams_seen> seen;

  caf::error init() {
    ++seen->inits;
    return {};
  }
  template <class E>
  void handle(const E&, const event_context& ctx) {
    std::lock_guard guard{seen->mtx};
    seen->streams.push_back(ctx.stream_id);
  }
};

/// Kills the actor of the root's child `id` (its supervisor restarts it).
void kill_child(application& app, const std::string& id) {
  auto kids = app.root().which_children();
  ASSERT_TRUE(kids);
  for (auto& k : *kids)
    if (k.id == id && k.actor) {
      caf::anon_send_exit(k.actor, caf::exit_reason::kill);
      return;
    }
  FAIL() << "no child " << id;
}

TEST(subscribed_handlers, a_category_subscription_sees_only_its_streams_and_init_runs_at_each_start) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir.str(), routes());
  auto seen = std::make_shared<streams_seen>();
  auto h = app->add_handler<category_reader>({}, false, [seen] {
    return std::make_unique<category_reader>(category_reader{seen});
  });
  ASSERT_TRUE(h);
  ASSERT_TRUE(app->dispatch(open_account{"a", "ada"}));
  ASSERT_TRUE(app->dispatch(request_transfer{"t", "a", "b", 1}));
  ASSERT_TRUE(app->dispatch(deposit{"a", 13}));
  ASSERT_TRUE(reaches(**h, app->store().head_position()));
  kill_child(*app, "handler:test.category_reader"); // its supervisor restarts it
  for (int i = 0; i < 2000 && seen->inits.load() < 2; ++i)
    std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(app->dispatch(deposit{"a", 14}));
  ASSERT_TRUE(reaches(**h, app->store().head_position()));
  std::lock_guard guard{seen->mtx};
  for (auto& s : seen->streams)
    EXPECT_EQ(s.rfind("account-", 0), 0u) << s << " is not in the category";
  EXPECT_EQ(std::count(seen->streams.begin(), seen->streams.end(), "account-a"), 3);
  EXPECT_GE(seen->inits.load(), 2) << "init ran at the start and again at the restart";
}

struct one_stream_reader {
  static constexpr const char* handler_name = "test.one_stream";
  using event = std::variant<account_opened, money_deposited>;
  std::shared_ptr<streams_seen> seen;
  template <class E>
  void handle(const E&, const event_context& ctx) {
    std::lock_guard guard{seen->mtx};
    seen->streams.push_back(ctx.stream_id);
  }
};

TEST(subscribed_handlers, a_stream_subscription_sees_one_stream_and_its_checkpoint_still_reaches_the_head) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir.str(), routes());
  auto seen = std::make_shared<streams_seen>();
  handler_options opts;
  opts.subscribe_to = subscription::stream("account-b");
  opts.batch_size = 2; // batches with no event of the stream move the checkpoint too
  auto h = app->add_handler<one_stream_reader>(opts, false, [seen] {
    return std::make_unique<one_stream_reader>(one_stream_reader{seen});
  });
  ASSERT_TRUE(h);
  for (auto id : {"a", "b", "c", "d", "e"})
    ASSERT_TRUE(app->dispatch(open_account{id, id}));
  ASSERT_TRUE(app->dispatch(deposit{"b", 5}));
  for (auto id : {"f", "g", "h"})
    ASSERT_TRUE(app->dispatch(open_account{id, id}));
  ASSERT_TRUE(reaches(**h, app->store().head_position()));
  std::lock_guard guard{seen->mtx};
  EXPECT_EQ(seen->streams, (std::vector<std::string>{"account-b", "account-b"}));
}

/// A projection that creates its own table in `init(models)`.
struct opened_accounts {
  static constexpr const char* projection_name = "test.opened";
  using event = std::variant<account_opened>;
  static inline std::atomic<int> inits{0};
  caf::error init(persistence::projection_store& models) {
    ++inits;
    return models.update(projection_name, [](persistence::projection_store::writer& w) {
      w.put("meta", "created_by", "init");
      return caf::error{};
    });
  }
  caf::error project(const account_opened& e, const event_context& ctx, persistence::projection_store::writer& w) {
    w.put("owners", std::string{ctx.aggregate_id()}, e.owner.value());
    return {};
  }
};

TEST(subscribed_handlers, a_projection_inits_with_its_read_models_and_rows_are_keyed_by_identity) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir.str(), routes());
  opened_accounts::inits = 0;
  auto p = app->add_projection<opened_accounts>();
  ASSERT_TRUE(p);
  ASSERT_TRUE(app->dispatch(open_account{"z", "zoe"}));
  ASSERT_TRUE(reaches(**p, app->store().head_position()));
  auto models = app->read_models();
  ASSERT_TRUE(models);
  EXPECT_EQ((*models)->get("test.opened", "meta", "created_by").value(), std::optional<std::string>{"init"});
  EXPECT_EQ((*models)->get("test.opened", "owners", "z").value(), std::optional<std::string>{"zoe"});
  EXPECT_EQ(opened_accounts::inits.load(), 1);
}

} // namespace
