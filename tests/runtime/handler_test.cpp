// Event handlers through the application: checkpoints across crashes, the
// error policies on a poison event, start positions, strong consistency.

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../../examples/bank/routes.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

/// A read model shared by the test and the handler instances it makes.
struct ledger {
  std::mutex mtx;
  std::map<std::string, int64_t> balances;
  std::multiset<uint64_t> seen; // positions, to see redeliveries
  uint64_t last = 0;            // for idempotence: the last position applied
  std::atomic<int> poison_failures{0};

  int64_t balance(const std::string& stream) {
    std::lock_guard guard{mtx};
    return balances[stream];
  }
  size_t applied() {
    std::lock_guard guard{mtx};
    return seen.size();
  }
};

/// Applies deposits and withdrawals; idempotent by position (at-least-once
/// delivery made exactly-once in effect). An amount of 666 is poison: it
/// fails `poison_failures_left` times.
struct balances {
  static constexpr const char* handler_name = "test.balances";
  using event = std::variant<money_deposited, money_withdrawn>;

  std::shared_ptr<ledger> model;
  std::shared_ptr<std::atomic<int>> poison_failures_left;
  std::chrono::milliseconds slowness{0};

  caf::error handle(const money_deposited& e, const event_context& ctx) {
    if (e.amount == 666 && poison_failures_left->fetch_sub(1) > 0) {
      ++model->poison_failures;
      return caf::make_error(caf::sec::runtime_error, "poison");
    }
    if (slowness.count() > 0)
      std::this_thread::sleep_for(slowness);
    return apply(ctx, e.amount);
  }
  caf::error handle(const money_withdrawn& e, const event_context& ctx) {
    if (e.amount == 13)
      throw std::runtime_error("unlucky withdrawal");
    return apply(ctx, -e.amount);
  }
  caf::error apply(const event_context& ctx, int64_t delta) {
    std::lock_guard guard{model->mtx};
    model->seen.insert(ctx.position);
    if (ctx.position <= model->last)
      return {}; // a redelivery: already applied
    model->last = ctx.position;
    model->balances[ctx.stream_id] += delta;
    return {};
  }
};

handler_options batches_of(size_t n) {
  handler_options o;
  o.batch_size = n;
  return o;
}

handler_options retrying(uint32_t max_retries, error_action::kind then = error_action::kind::stop) {
  handler_options o;
  o.on_error.max_retries = max_retries;
  o.on_error.initial_delay = 1ms;
  o.on_error.then = then;
  return o;
}

struct stray {
  static constexpr const char* type_name = "test.stray";
  int x = 0;
  MSGPACK_DEFINE_MAP(x);
};

struct stray_handler {
  static constexpr const char* handler_name = "test.stray_handler";
  using event = std::variant<stray>;
  caf::error handle(const stray&, const event_context&) { return {}; }
};

// A member directory whose event changed shape: version 1 stored first and
// last names, version 2 one full name.
struct member_joined {
  static constexpr const char* type_name = "test.member_joined";
  static constexpr uint32_t schema_version = 2;
  std::string full_name;
  MSGPACK_DEFINE_MAP(full_name);
  static void upcast(nlohmann::json& d, uint32_t from) {
    if (from == 1) {
      d["full_name"] = d.value("first", "") + " " + d.value("last", "");
      d.erase("first");
      d.erase("last");
    }
  }
};
struct join { std::string member, name; SOURCERY_FIELDS(member, name) };
struct member {
  using event = std::variant<member_joined>;
  std::string name;
  sourcery::outcome<event> execute(const join& c) const { return member_joined{c.name}; }
  void apply(const member_joined& e) { name = e.full_name; }
};
struct member_names {
  static constexpr const char* handler_name = "test.member_names";
  using event = std::variant<member_joined>;
  std::shared_ptr<std::vector<std::string>> names;
  void handle(const member_joined& e, const event_context&) { names->push_back(e.full_name); }
};

/// Records each stream's versions in the order it sees them, and on which
/// threads: for the partitioned handler test.
struct order_log {
  std::mutex mtx;
  std::map<std::string, std::vector<uint64_t>> versions;
  std::set<std::thread::id> threads;
  size_t batches = 0;
  size_t events = 0;
};

struct partitioned {
  static constexpr const char* handler_name = "test.partitioned";
  using event = std::variant<money_deposited>;
  std::shared_ptr<order_log> log;
  void handle(const money_deposited&, const event_context& ctx) {
    std::this_thread::sleep_for(50us); // long enough for the partitions to overlap
    std::lock_guard guard{log->mtx};
    log->versions[ctx.stream_id].push_back(ctx.stream_version);
    log->threads.insert(std::this_thread::get_id());
  }
};

struct batched {
  static constexpr const char* handler_name = "test.batched";
  using event = std::variant<money_deposited>;
  std::shared_ptr<order_log> log;
  caf::error handle_batch(const std::vector<event_context>& batch) {
    std::lock_guard guard{log->mtx};
    ++log->batches;
    log->events += batch.size();
    return {};
  }
};

class handlers : public ::testing::Test {
protected:
  void start(bool in_memory = false) {
    application_config cfg;
    cfg.data_dir = (dir_ / "store").string();
    cfg.in_memory = in_memory;
    auto app = application::start(cfg, bank::routes());
    ASSERT_TRUE(app) << describe_error(app.error());
    app_ = std::move(*app);
  }

  caf::expected<std::shared_ptr<handler_status>> add(handler_options opts = {}, bool strong = false,
                                                     std::chrono::milliseconds slowness = 0ms) {
    auto model = model_;
    auto poison = poison_left_;
    return app_->add_handler<balances>(opts, strong, [model, poison, slowness] {
      auto h = std::make_unique<balances>();
      h->model = model;
      h->poison_failures_left = poison;
      h->slowness = slowness;
      return h;
    });
  }

  void deposit_n(const std::string& id, int n, int64_t amount = 1) {
    for (int i = 0; i < n; ++i)
      ASSERT_TRUE(app_->dispatch(deposit{id, amount}));
  }

  /// Waits (bounded) until the handler has handled everything stored.
  bool caught_up(handler_status& s) {
    for (int i = 0; i < 500 && s.position() < app_->store().head_position(); ++i)
      std::this_thread::sleep_for(5ms);
    return s.position() == app_->store().head_position();
  }

  sourcery::testing::temp_dir dir_;
  std::shared_ptr<ledger> model_ = std::make_shared<ledger>();
  std::shared_ptr<std::atomic<int>> poison_left_ = std::make_shared<std::atomic<int>>(0);
  std::unique_ptr<application> app_;
};

TEST_F(handlers, a_handler_catches_up_then_follows_live_events) {
  start();
  ASSERT_TRUE(app_->dispatch(open_account{"a", "ann"}));
  deposit_n("a", 10);
  auto status = add();
  ASSERT_TRUE(status) << describe_error(status.error());
  ASSERT_TRUE(caught_up(**status));
  EXPECT_EQ(model_->balance("account-a"), 10);
  ASSERT_TRUE(app_->dispatch(withdraw{"a", 4}));
  ASSERT_TRUE(caught_up(**status));
  EXPECT_EQ(model_->balance("account-a"), 6);
  auto cp = app_->store().load_checkpoint("handler:test.balances");
  ASSERT_TRUE(cp && *cp);
  EXPECT_EQ(**cp, app_->store().head_position());
  EXPECT_FALSE(add()) << "one handler per name";
}

TEST_F(handlers, a_killed_handler_resumes_from_its_checkpoint_with_nothing_lost) {
  start();
  ASSERT_TRUE(app_->dispatch(open_account{"k", "kim"}));
  auto status = add(batches_of(8));
  ASSERT_TRUE(status);
  for (int round = 0; round < 5; ++round) {
    deposit_n("k", 40);
    // Kill it mid-stream, wherever it is.
    auto kids = app_->root().which_children();
    ASSERT_TRUE(kids);
    for (auto& k : *kids)
      if (k.id == "handler:test.balances" && k.actor)
        caf::anon_send_exit(k.actor, caf::exit_reason::kill);
  }
  ASSERT_TRUE(caught_up(**status));
  EXPECT_EQ(model_->balance("account-k"), 200) << "every deposit applied exactly once in effect";
  EXPECT_GE(model_->applied(), 200u) << "at-least-once: redeliveries are allowed";
  auto kids = app_->root().which_children();
  ASSERT_TRUE(kids);
  bool restarted = false;
  for (auto& k : *kids)
    if (k.id == "handler:test.balances")
      restarted = k.restarts > 0 && k.actor != nullptr;
  EXPECT_TRUE(restarted);
}

TEST_F(handlers, a_poison_event_is_retried_then_handled) {
  start();
  *poison_left_ = 2; // fails twice, then succeeds
  ASSERT_TRUE(app_->dispatch(open_account{"p", "pat"}));
  auto status = add(retrying(3));
  ASSERT_TRUE(status);
  ASSERT_TRUE(app_->dispatch(deposit{"p", 666}));
  deposit_n("p", 3);
  ASSERT_TRUE(caught_up(**status));
  EXPECT_EQ(model_->poison_failures.load(), 2);
  EXPECT_EQ(model_->balance("account-p"), 669);
  EXPECT_FALSE((*status)->stopped());
}

TEST_F(handlers, a_poison_event_is_skipped_after_its_retries) {
  start();
  *poison_left_ = 100;
  ASSERT_TRUE(app_->dispatch(open_account{"s", "sam"}));
  auto status = add(retrying(2, error_action::kind::skip));
  ASSERT_TRUE(status);
  ASSERT_TRUE(app_->dispatch(deposit{"s", 666}));
  ASSERT_TRUE(app_->dispatch(withdraw{"s", 13})); // throws: skipped too
  deposit_n("s", 3);
  ASSERT_TRUE(caught_up(**status));
  EXPECT_EQ(model_->poison_failures.load(), 3) << "the first try and two retries";
  EXPECT_EQ(model_->balance("account-s"), 3);
  EXPECT_FALSE((*status)->stopped());
}

TEST_F(handlers, a_poison_event_stops_the_handler_without_a_crash_loop) {
  start();
  *poison_left_ = 100;
  ASSERT_TRUE(app_->dispatch(open_account{"x", "xi"}));
  deposit_n("x", 2);
  auto status = add(retrying(1), true);
  ASSERT_TRUE(status);
  ASSERT_TRUE(app_->dispatch(deposit{"x", 666})); // the handler stops on it
  deposit_n("x", 3);
  for (int i = 0; i < 400 && !(*status)->stopped(); ++i)
    std::this_thread::sleep_for(5ms);
  ASSERT_TRUE((*status)->stopped());
  EXPECT_NE(describe_error((*status)->stopped()).find("poison"), std::string::npos);
  EXPECT_EQ(model_->balance("account-x"), 2) << "nothing after the poison event was handled";
  EXPECT_EQ(model_->poison_failures.load(), 2);
  // Stopped for good: not restarted, and strong dispatches say so at once.
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(model_->poison_failures.load(), 2);
  dispatch_options strong;
  strong.consistency_level = consistency::strong;
  auto r = app_->dispatch(deposit{"x", 1}, strong);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::consistency_timeout);
  EXPECT_NE(describe_error(r.error()).find("were stored"), std::string::npos) << describe_error(r.error());
  auto acc = app_->aggregate_state<account>("account-x");
  ASSERT_TRUE(acc);
  EXPECT_EQ(acc->balance, 2 + 666 + 3 + 1) << "the events are stored whatever the handler did";
  // The checkpoint stays before the poison event, for an operator to act.
  auto cp = app_->store().load_checkpoint("handler:test.balances");
  ASSERT_TRUE(cp && *cp);
  EXPECT_EQ(**cp, 3u);
}

TEST_F(handlers, handlers_start_from_origin_current_or_a_position) {
  start(true);
  ASSERT_TRUE(app_->dispatch(open_account{"o", "oz"}));
  deposit_n("o", 4); // positions 2..5
  handler_options from3;
  from3.start = handler_start::position;
  from3.start_position = 3;
  auto status = add(from3);
  ASSERT_TRUE(status);
  ASSERT_TRUE(caught_up(**status));
  EXPECT_EQ(model_->balance("account-o"), 2) << "positions 4 and 5 only";
}

TEST_F(handlers, a_handler_starting_at_current_sees_only_later_events_even_after_a_restart) {
  start(true);
  ASSERT_TRUE(app_->dispatch(open_account{"c", "cy"}));
  deposit_n("c", 3, 10); // before the handler: not its business
  handler_options now;
  now.start = handler_start::current;
  auto status = add(now);
  ASSERT_TRUE(status);
  deposit_n("c", 2, 1);
  ASSERT_TRUE(caught_up(**status));
  EXPECT_EQ(model_->balance("account-c"), 2) << "the two deposits after it started";
  // Restarted, it resumes from its checkpoint, not from the head again.
  auto kids = app_->root().which_children();
  ASSERT_TRUE(kids);
  for (auto& k : *kids)
    if (k.id == "handler:test.balances" && k.actor)
      caf::anon_send_exit(k.actor, caf::exit_reason::kill);
  deposit_n("c", 1, 100);
  ASSERT_TRUE(caught_up(**status));
  for (int i = 0; i < 200 && model_->balance("account-c") < 102; ++i)
    std::this_thread::sleep_for(5ms);
  EXPECT_GE(model_->balance("account-c"), 102) << "the deposit made while it restarted is handled";
  EXPECT_LT(model_->balance("account-c"), 130) << "the deposits before it started stay unhandled";
}

TEST_F(handlers, strong_consistency_shows_the_effect_when_dispatch_returns) {
  start();
  auto status = add({}, true, 2ms); // a slow projection: eventual reads would lag
  ASSERT_TRUE(status);
  dispatch_options strong;
  strong.consistency_level = consistency::strong;
  ASSERT_TRUE(app_->dispatch(open_account{"c", "cy"}, strong));
  for (int i = 1; i <= 20; ++i) {
    auto r = app_->dispatch(deposit{"c", 5}, strong);
    ASSERT_TRUE(r) << describe_error(r.error());
    ASSERT_EQ(model_->balance("account-c"), 5 * i) << "the read model lags a strong dispatch";
    EXPECT_GE((*status)->position(), r->last_position);
  }
  // Naming the handler works the same; an unknown name is an error that
  // still says the events were stored.
  strong.consistent_with = {"test.balances"};
  ASSERT_TRUE(app_->dispatch(deposit{"c", 5}, strong));
  EXPECT_EQ(model_->balance("account-c"), 105);
  strong.consistent_with = {"nobody"};
  auto r = app_->dispatch(deposit{"c", 5}, strong);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::consistency_timeout);
}

TEST_F(handlers, a_strong_dispatch_times_out_with_its_events_stored) {
  start();
  auto status = add({}, true, 300ms);
  ASSERT_TRUE(status);
  dispatch_options strong;
  strong.consistency_level = consistency::strong;
  strong.consistency_timeout = 50ms;
  ASSERT_TRUE(app_->dispatch(open_account{"t", "ty"}));
  auto started = std::chrono::steady_clock::now();
  auto r = app_->dispatch(deposit{"t", 7}, strong);
  ASSERT_FALSE(r);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::consistency_timeout);
  auto acc = app_->aggregate_state<account>("account-t");
  ASSERT_TRUE(acc);
  EXPECT_EQ(acc->balance, 7);
}

TEST_F(handlers, a_handler_of_an_unknown_event_type_is_refused) {
  start(true);
  auto r = app_->add_handler<stray_handler>();
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::invalid_route);
}

TEST(upcasting, handlers_and_aggregates_see_old_events_in_their_current_shape) {
  sourcery::testing::temp_dir dir;
  application_config cfg;
  cfg.data_dir = (dir / "store").string();
  router r;
  r.route<member, join>(&join::member, "member-");
  auto app = application::start(cfg, std::move(r));
  ASSERT_TRUE(app) << describe_error(app.error());
  // An event written by an older version of the program.
  persistence::event_data old;
  old.type = "test.member_joined";
  old.schema_version = 1;
  old.data = nlohmann::json::to_msgpack(nlohmann::json{{"first", "Ada"}, {"last", "Lovelace"}});
  ASSERT_TRUE((*app)->store().append("member-1", persistence::expected_version::no_stream(), {old}));
  ASSERT_TRUE((*app)->dispatch(join{"2", "Alan Turing"}));
  auto names = std::make_shared<std::vector<std::string>>();
  auto status = (*app)->add_handler<member_names>({}, true, [names] {
    auto h = std::make_unique<member_names>();
    h->names = names;
    return h;
  });
  ASSERT_TRUE(status) << describe_error(status.error());
  for (int i = 0; i < 400 && (*status)->position() < 2; ++i)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(*names, (std::vector<std::string>{"Ada Lovelace", "Alan Turing"}));
  auto m = (*app)->aggregate_state<member>("member-1");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->name, "Ada Lovelace");
}

TEST_F(handlers, partitions_run_concurrently_and_keep_order_within_a_key) {
  start(true);
  for (int a = 0; a < 12; ++a) {
    ASSERT_TRUE(app_->dispatch(open_account{std::to_string(a), "p"}));
    deposit_n(std::to_string(a), 20);
  }
  auto log = std::make_shared<order_log>();
  handler_options opts;
  opts.concurrency = 4;
  auto status = app_->add_handler<partitioned>(opts, false, [log] {
    auto h = std::make_unique<partitioned>();
    h->log = log;
    return h;
  });
  ASSERT_TRUE(status);
  ASSERT_TRUE(caught_up(**status));
  std::lock_guard guard{log->mtx};
  ASSERT_EQ(log->versions.size(), 12u);
  for (auto& [stream, versions] : log->versions) {
    ASSERT_EQ(versions.size(), 20u) << stream;
    for (size_t i = 0; i < versions.size(); ++i)
      EXPECT_EQ(versions[i], i + 2) << stream << ": in order, each once";
  }
  EXPECT_GT(log->threads.size(), 1u) << "the partitions ran on several threads";
}

TEST_F(handlers, a_batch_handler_takes_whole_batches) {
  start(true);
  ASSERT_TRUE(app_->dispatch(open_account{"b", "bo"}));
  deposit_n("b", 50);
  auto log = std::make_shared<order_log>();
  auto status = app_->add_handler<batched>(batches_of(16), false, [log] {
    auto h = std::make_unique<batched>();
    h->log = log;
    return h;
  });
  ASSERT_TRUE(status);
  ASSERT_TRUE(caught_up(**status));
  std::lock_guard guard{log->mtx};
  EXPECT_EQ(log->events, 50u) << "the deposits only: account_opened is not a type it declares";
  EXPECT_EQ(log->batches, 4u);
}

} // namespace
