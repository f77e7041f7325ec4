// Process managers when things fail: a failed command is retried alone (the
// commands before it are not sent again), a saga whose own code throws or
// whose saved state does not decode goes through its error policy instead of
// crash-looping the tree, and failures of its storage heal.

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "../../examples/bank/routes.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/faulty_store.hpp"
#include "sourcery/persistence/memory_store.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {

/// The account's id from its stream id ("account-7" -> "7").
std::string account_of(const event_context& rec) {
  return rec.stream_id.substr(std::string{"account-"}.size());
}

/// For each opened account: a welcome bonus of 1, then of 2 (two commands).
struct bonus_saga {
  static constexpr const char* process_name = "test.bonus";
  using event = std::variant<account_opened>;
  int64_t handled = 0;
  MSGPACK_DEFINE_MAP(handled);
  static interest interested(const account_opened& e) { return interest::start(e.owner.value()); }
  commands handle(const account_opened&, const event_context& rec) const {
    return {command(deposit{account_of(rec), 1}), command(deposit{account_of(rec), 2})};
  }
  void apply(const account_opened&) { ++handled; }
};

/// Halts the first `n` deposits of 2.
struct halt_second_bonus : middleware {
  std::atomic<int> left;
  explicit halt_second_bonus(int n) : left(n) {}
  caf::error before_dispatch(dispatch_context& ctx) override {
    if (auto* d = ctx.command_as<deposit>(); d != nullptr && d->amount == 2 && left.fetch_sub(1) > 0)
      return make_error(dispatch_errc::halted, "injected: not now");
    return {};
  }
};

/// Withdraws more than there is, and its `on_rejected` throws.
struct clumsy_saga {
  static constexpr const char* process_name = "test.clumsy";
  using event = std::variant<account_opened>;
  std::string owner;
  MSGPACK_DEFINE_MAP(owner);
  static interest interested(const account_opened& e) { return interest::start(e.owner.value()); }
  commands handle(const account_opened&, const event_context& rec) const {
    return {command(withdraw{account_of(rec), 1000})};
  }
  commands on_rejected(const failed_command&, const event_context&) const {
    throw std::logic_error("a bug in the saga");
  }
};

struct run {
  sourcery::testing::temp_dir dir;
  std::unique_ptr<application> app;
  std::atomic<int> failures{0};

  explicit run(std::vector<std::shared_ptr<middleware>> mw = {}, std::shared_ptr<persistence::event_store> store = {}) {
    application_config cfg;
    cfg.data_dir = (dir / "data").string();
    if (store) {
      cfg.store = std::move(store);
      cfg.read_model_dir = (dir / "models").string();
    }
    auto a = application::start(cfg, bank::routes(), std::move(mw));
    EXPECT_TRUE(a) << describe_error(a.error());
    if (a)
      app = std::move(*a);
  }

  template <class P>
  std::shared_ptr<handler_status> add(process_options opts) {
    opts.on_error.initial_delay = 5ms;
    opts.on_error.max_delay = 20ms;
    opts.on_error.observer = [this](const handler_failure&) { ++failures; };
    auto pm = app->add_process_manager<P>(opts);
    EXPECT_TRUE(pm) << describe_error(pm.error());
    return pm ? *pm : nullptr;
  }

  int64_t balance(const std::string& id) {
    auto a = app->aggregate_state<account>("account-" + id);
    return a ? a->balance : -1;
  }

  template <class Done>
  bool wait_until(Done done) {
    for (int i = 0; i < 1000 && !done(); ++i)
      std::this_thread::sleep_for(5ms);
    return done();
  }
};

} // namespace

TEST(process_failures, a_failed_command_is_retried_alone_not_the_whole_event) {
  auto halt = std::make_shared<halt_second_bonus>(2);
  run r{{halt}};
  auto status = r.add<bonus_saga>({});
  ASSERT_TRUE(r.app->dispatch(open_account{"7", "ann"}));
  ASSERT_TRUE(r.wait_until([&] { return r.balance("7") == 3; })) << r.balance("7");
  ASSERT_TRUE(r.wait_until([&] { return status->position() >= 1; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(r.balance("7"), 3) << "the bonus of 1 was sent once, though its event was retried twice";
  EXPECT_EQ(r.failures.load(), 2);
  EXPECT_FALSE(status->stopped());
  auto events = r.app->store().read_stream("account-7", 1, 10);
  ASSERT_TRUE(events);
  EXPECT_EQ(events->size(), 3u); // opened, +1, +2
}

TEST(process_failures, a_throwing_on_rejected_goes_through_the_policy_without_a_crash_loop) {
  run r;
  process_options opts;
  opts.on_error.max_retries = 1;
  opts.on_error.then = error_action::kind::stop;
  auto status = r.add<clumsy_saga>(opts);
  ASSERT_TRUE(r.app->dispatch(open_account{"1", "ann"}));
  ASSERT_TRUE(r.wait_until([&] { return bool{status->stopped()}; }));
  EXPECT_NE(describe_error(status->stopped()).find("on_rejected threw: a bug in the saga"), std::string::npos)
    << describe_error(status->stopped());
  EXPECT_FALSE(r.app->failure());
  EXPECT_TRUE(r.app->dispatch(deposit{"1", 5}));
}

TEST(process_failures, a_saved_state_that_does_not_decode_is_a_policy_decision_not_a_crash_loop) {
  run r;
  {
    // What an older build, or a damaged copy, may have left: not msgpack.
    auto models = r.app->read_models();
    ASSERT_TRUE(models);
    ASSERT_FALSE((*models)->write("process:test.bonus", 0, [](persistence::projection_store::writer& w) {
      w.put("instances", "ann", std::string{"\xc1 garbage"});
      return caf::error{};
    }));
  }
  process_options opts;
  opts.on_error.max_retries = 1;
  opts.on_error.then = error_action::kind::skip;
  auto status = r.add<bonus_saga>(opts);
  ASSERT_TRUE(r.app->dispatch(open_account{"1", "ann"}));  // instance "ann": broken state, skipped
  ASSERT_TRUE(r.app->dispatch(open_account{"2", "bob"}));  // instance "bob": fine
  ASSERT_TRUE(r.wait_until([&] { return r.balance("2") == 3; }));
  ASSERT_TRUE(r.wait_until([&] { return status->position() >= 2; }));
  EXPECT_EQ(r.balance("1"), 0) << "the broken instance's event was skipped";
  EXPECT_EQ(r.failures.load(), 2); // a try and one retry, then skipped
  EXPECT_FALSE(status->stopped());
  EXPECT_FALSE(r.app->failure());
}

TEST(process_failures, failures_of_its_storage_are_retried_until_they_heal) {
  auto inner = std::make_shared<persistence::memory_store>();
  auto store = std::make_shared<persistence::faulty_store>(inner);
  run r{{}, store};
  // The event first, then the faults, then the saga: its first reads of
  // `$all` are sure to meet them (no other reader can use them up first).
  ASSERT_TRUE(r.app->dispatch(open_account{"5", "eve"}));
  store->fail_reads(20, persistence::make_error(persistence::store_errc::io_error, "injected: EIO"));
  std::atomic<int> storage{0};
  process_options opts;
  opts.on_error.storage_observer = [&](const std::string&, const caf::error&, uint32_t, std::chrono::milliseconds) {
    ++storage;
  };
  auto status = r.add<bonus_saga>(opts);
  ASSERT_TRUE(r.wait_until([&] { return r.balance("5") == 3; })) << r.balance("5");
  EXPECT_GE(storage.load(), 1);
  EXPECT_FALSE(status->stopped());
  EXPECT_FALSE(r.app->failure());
}

namespace {

/// Counts the accounts opened by one owner; never stops (only idleness ends it).
struct opened_counter {
  static constexpr const char* process_name = "test.opened_counter";
  using event = std::variant<account_opened>;
  int64_t seen = 0;
  MSGPACK_DEFINE_MAP(seen);
  static interest interested(const account_opened& e) { return interest::start(e.owner.value()); }
  commands handle(const account_opened&) const { return {}; }
  void apply(const account_opened&) { ++seen; }
};

} // namespace

TEST(process_lifecycle, a_passivated_instance_reopens_from_its_saved_state) {
  run r;
  process_options opts;
  opts.idle_timeout = 100ms;
  auto status = r.add<opened_counter>(opts);
  auto& actors = r.app->system().registry();
  auto caught_up = [&] { return status->position() >= r.app->store().head_position(); };
  auto before = actors.running();
  ASSERT_TRUE(r.app->dispatch(open_account{"1", "gus"}));
  ASSERT_TRUE(r.wait_until(caught_up));
  EXPECT_EQ(actors.running(), before + 2) << "gus's instance and account 1's aggregate";
  // Idle past its timeout: the instance ends (the aggregate stays).
  ASSERT_TRUE(r.wait_until([&] { return actors.running() == before + 1; })) << "passivated";
  ASSERT_TRUE(r.app->dispatch(open_account{"2", "gus"}));
  ASSERT_TRUE(r.wait_until(caught_up));
  ASSERT_TRUE(r.wait_until([&] {
    auto models = r.app->read_models();
    auto saved = models ? (*models)->get("process:test.opened_counter", "instances", "gus") : caf::expected<std::optional<std::string>>{caf::error{}};
    if (!saved || !*saved)
      return false;
    auto oh = msgpack::unpack((*saved)->data(), (*saved)->size());
    opened_counter c;
    persistence::convert_map(oh.get(), c);
    return c.seen == 2; // reopened from seen == 1, not from a fresh state
  }));
}
