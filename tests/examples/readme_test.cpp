// The README's code, compiled and run: each block between `// README:`
// markers is the text of a README example (keep the two the same).

#include <atomic>
#include <future>
#include <iostream>

#include <gtest/gtest.h>

#include "../support/temp_dir.hpp"
#include "sourcery/actors/aggregates/aggregate_testing.hpp"
#include "sourcery/persistence/read_model_table.hpp"
#include "sourcery/runtime/application.hpp"

namespace readme {

// README: aggregates
struct open_account { std::string account, owner; SOURCERY_FIELDS(account, owner) };
struct deposit { std::string account; int64_t amount = 0; SOURCERY_FIELDS(account, amount) };
struct withdraw { std::string account; int64_t amount = 0; SOURCERY_FIELDS(account, amount) };

struct account_opened { std::string owner; SOURCERY_EVENT("bank.account_opened", owner) };
struct money_deposited { int64_t amount = 0; SOURCERY_EVENT("bank.money_deposited", amount) };
struct money_withdrawn { int64_t amount = 0; SOURCERY_EVENT("bank.money_withdrawn", amount) };

struct account {
  using event = std::variant<account_opened, money_deposited, money_withdrawn>;
  bool open = false;
  int64_t balance = 0;

  sourcery::outcome<event> execute(const open_account& c) const {
    if (open) return sourcery::reject("already_open");
    return account_opened{c.owner};
  }
  sourcery::outcome<event> execute(const deposit& c) const {
    if (!open) return sourcery::reject("not_open");
    return money_deposited{c.amount};
  }
  sourcery::outcome<event> execute(const withdraw& c) const {
    if (c.amount > balance) return sourcery::reject("insufficient_funds");
    return money_withdrawn{c.amount};
  }
  void apply(const account_opened&) { open = true; }
  void apply(const money_deposited& e) { balance += e.amount; }
  void apply(const money_withdrawn& e) { balance -= e.amount; }
};
// README: end

// README: routes
inline sourcery::router routes() {
  sourcery::aggregate_settings accounts;   // all optional:
  accounts.snapshot_every = 100;           // snapshot each 100 events (needs MSGPACK_DEFINE_MAP on the state)
  accounts.lifespan = sourcery::lifespan::timeout(std::chrono::minutes{10});  // passivate when idle
  accounts.after_error = sourcery::lifespan::stop();                          // ... at once after a refusal
  accounts.max_retries = 5;                // conflicts with other writers: decide again up to 5 times
  accounts.timeout = std::chrono::seconds{2};                                 // dispatch defaults
  accounts.consistency_level = sourcery::consistency::eventual;
  sourcery::router r;
  r.aggregate<account>([](const auto& c) { return c.account; }, "account-", accounts)
    .dispatch<open_account, deposit, withdraw>();
  return r;
}
// README: end

// README: handlers
struct balances {
  static constexpr const char* handler_name = "bank.balances";
  using event = std::variant<money_deposited, money_withdrawn>;
  static sourcery::subscription subscribe_to() { return sourcery::subscription::category("account-"); }
  std::map<std::string, int64_t> totals;

  void init() { totals.clear(); }       // at each (re)start, before the first event
  void handle(const money_deposited& e, const sourcery::event_context& ctx) {
    totals[std::string{ctx.aggregate_id()}] += e.amount;   // "42", not "account-42"
    auto user = ctx.meta().get_string("user");             // what the command carried
    (void)user;
  }
  void handle(const money_withdrawn& e, const sourcery::event_context& ctx) {
    totals[std::string{ctx.aggregate_id()}] -= e.amount;
  }
};
// README: end

// README: tables
struct balance_row { std::string id; int64_t balance = 0; SOURCERY_FIELDS(id, balance) };
inline const sourcery::persistence::table<balance_row> balance_table{
  "balances", "id", "id text PRIMARY KEY, balance bigint NOT NULL"};   // a SQL table on PostgreSQL

struct balance_view {
  static constexpr const char* projection_name = "bank.balance_view";
  using event = std::variant<account_opened, money_deposited>;
  using writer = sourcery::persistence::projection_store::writer;

  caf::error init(sourcery::persistence::projection_store& models) {
    return balance_table.create(models, projection_name);
  }
  caf::error project(const account_opened&, const sourcery::event_context& ctx, writer& w) {
    return balance_table.put(w, {std::string{ctx.aggregate_id()}, 0});
  }
  caf::error project(const money_deposited& e, const sourcery::event_context& ctx, writer& w) {
    return balance_table.update(w, ctx.aggregate_id(), [&](balance_row& r) { r.balance += e.amount; });
  }
};
// README: end

struct tag_user : sourcery::middleware {
  caf::error before_dispatch(sourcery::dispatch_context& ctx) override {
    ctx.options.metadata.set("via", "middleware");
    return {};
  }
};

} // namespace readme

namespace {

TEST(readme, the_aggregate_example_decides_as_documented) {
  using namespace readme;
  EXPECT_TRUE(sourcery::testing::given<account>(account_opened{"alice"}, money_deposited{100})
                .when(withdraw{"a", 150})
                .rejects("insufficient_funds"));
}

TEST(readme, the_dispatch_example_runs) {
  using namespace readme;
  sourcery::testing::temp_dir dir;
  // README: dispatch
  sourcery::application_config config;
  config.data_dir = dir.str();
  auto app = sourcery::application::start(config, routes(), {std::make_shared<tag_user>()});
  if (!app) { std::cerr << sourcery::describe_error(app.error()); return; }
  (*app)->dispatch(open_account{"42", "alice"});
  sourcery::dispatch_options opts;
  opts.metadata.set("user", "alice").set("request", 7);          // typed, stored as a msgpack map
  opts.returns = sourcery::returning::version;
  auto r = (*app)->dispatch(deposit{"42", 100}, opts);           // blocks until durably stored
  if (r && !r->accepted) std::cout << r->why.reason;              // a rejection is an answer, not an error
  (*app)->dispatch_async(deposit{"42", 5}, {}, [](caf::expected<sourcery::dispatch_result>) {});  // never blocks
  // README: end
  ASSERT_TRUE(r && r->accepted);
  EXPECT_EQ(r->version, 2u);
  auto events = (*app)->store().read_stream("account-42", 2, 1);
  ASSERT_TRUE(events && events->size() == 1);
  auto meta = sourcery::metadata::decode((*events)[0].metadata);
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->get_string("user"), "alice");
  EXPECT_EQ(meta->get_string("via"), "middleware");

  auto h = (*app)->add_handler<balances>();
  ASSERT_TRUE(h);
  auto p = (*app)->add_projection<balance_view>();
  ASSERT_TRUE(p);
  ASSERT_TRUE((*app)->dispatch(deposit{"42", 1}));
  auto head = (*app)->store().head_position();
  auto reached = std::make_shared<std::promise<void>>();
  auto f = reached->get_future();
  (*p)->when_reached(head, [reached](caf::error) { reached->set_value(); });
  ASSERT_EQ(f.wait_for(std::chrono::seconds{10}), std::future_status::ready);
  auto models = (*app)->read_models();
  ASSERT_TRUE(models);
  auto row = balance_table.find(**models, balance_view::projection_name, "42");
  ASSERT_TRUE(row && *row);
  EXPECT_EQ((*row)->balance, 106);
}

} // namespace
