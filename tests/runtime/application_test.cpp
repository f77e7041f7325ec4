// The application: routing, dispatch (blocking and from actors), middleware,
// returned values, and state that survives a restart on the same directory.

#include <mutex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../../examples/bank/routes.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;

namespace {


std::unique_ptr<application> start(const sourcery::testing::temp_dir& dir, router r = bank::routes(),
                                   std::vector<std::shared_ptr<middleware>> mw = {}) {
  application_config cfg;
  cfg.data_dir = (dir / "data").string();
  auto app = application::start(cfg, std::move(r), std::move(mw));
  EXPECT_TRUE(app) << describe_error(app.error());
  return app ? std::move(*app) : nullptr;
}

TEST(application, dispatches_to_aggregates_by_identity_and_prefix) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir);
  auto opened = app->dispatch(open_account{"42", "alice"});
  ASSERT_TRUE(opened) << describe_error(opened.error());
  EXPECT_TRUE(opened->accepted);
  EXPECT_EQ(opened->aggregate_id, "account-42");
  ASSERT_TRUE(app->dispatch(deposit{"42", 100}));
  auto refused = app->dispatch(withdraw{"42", 500});
  ASSERT_TRUE(refused);
  EXPECT_FALSE(refused->accepted);
  EXPECT_EQ(refused->why.reason, "insufficient_funds");
  auto info = app->store().stream_info("account-42");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->version, 2u);
  auto state = app->aggregate_state<account>("account-42");
  ASSERT_TRUE(state);
  EXPECT_EQ(state->balance, 100);
}

TEST(application, returns_version_state_or_events_on_request) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir);
  ASSERT_TRUE(app->dispatch(open_account{"7", "bob"}));
  dispatch_options opts;
  opts.returns = returning::state;
  auto with_state = app->dispatch(deposit{"7", 30}, opts);
  ASSERT_TRUE(with_state);
  ASSERT_TRUE(with_state->state_as<account>().has_value());
  EXPECT_EQ(with_state->state_as<account>()->balance, 30);
  opts.returns = returning::events;
  opts.causation_id = "request-9";
  opts.correlation_id = "session-3";
  auto with_events = app->dispatch(deposit{"7", 12}, opts);
  ASSERT_TRUE(with_events);
  ASSERT_EQ(with_events->events.size(), 1u);
  const auto& ev = with_events->events[0];
  EXPECT_EQ(ev.type, "bank.money_deposited");
  EXPECT_EQ(ev.stream_id, "account-7");
  EXPECT_EQ(ev.causation_id, "request-9");
  EXPECT_EQ(ev.correlation_id, "session-3");
  EXPECT_EQ(with_events->version, 3u);
}

TEST(application, unregistered_and_doubly_routed_commands_are_clear_errors) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir);
  struct close_account {
    std::string account;
  };
  auto r = app->dispatch(close_account{"1"});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::unregistered_command);
  EXPECT_NE(describe_error(r.error()).find("close_account"), std::string::npos) << describe_error(r.error());
  app->stop();
  EXPECT_EQ(code_of_dispatch(app->dispatch(deposit{"1", 1}).error()), dispatch_errc::stopped);

  router twice = bank::routes();
  twice.include(bank::routes());
  application_config other;
  other.data_dir = (dir / "other").string();
  auto bad = application::start(other, twice);
  ASSERT_FALSE(bad);
  EXPECT_EQ(code_of_dispatch(bad.error()), dispatch_errc::invalid_route);
}

/// Closes an account by withdrawing what is left (a command handler, not
/// an `execute` of the account's).
struct close_account {
  std::string account;
  SOURCERY_FIELDS(account)
};

TEST(application, routers_compose_and_command_handlers_stand_in_for_execute) {
  sourcery::testing::temp_dir dir;
  router opening;
  opening.route<account, open_account>(&open_account::account, "account-");
  router closing;
  closing.route<account, close_account>(&close_account::account,
                                        [](const account& a, const close_account&) -> outcome<account::event> {
                                          if (a.balance == 0)
                                            return no_events;
                                          return money_withdrawn{a.balance};
                                        },
                                        "account-");
  closing.route<account, deposit>(&deposit::account, "account-");
  opening.include(closing);
  auto app = start(dir, opening);
  ASSERT_TRUE(app->dispatch(open_account{"1", "eve"}));
  ASSERT_TRUE(app->dispatch(deposit{"1", 70}));
  auto closed = app->dispatch(close_account{"1"});
  ASSERT_TRUE(closed && closed->accepted);
  EXPECT_EQ(app->aggregate_state<account>("account-1")->balance, 0);
}

struct enrich_metadata : middleware {
  caf::error before_dispatch(dispatch_context& ctx) override {
    ctx.options.metadata.set("user", "alice").set("tenant", 42).set("trusted", true);
    return {};
  }
};

TEST(application, middleware_logs_validates_and_enriches) {
  sourcery::testing::temp_dir dir;
  auto lines = std::make_shared<std::vector<std::string>>();
  auto mtx = std::make_shared<std::mutex>();
  auto log = std::make_shared<logging_middleware>([lines, mtx](const std::string& line) {
    std::lock_guard guard{*mtx};
    lines->push_back(line);
  });
  auto validate = std::make_shared<validation_middleware>();
  validate->add<deposit>([](const deposit& d) -> std::optional<std::string> {
    if (d.amount > 1'000'000)
      return "amount above the deposit limit";
    return std::nullopt;
  });
  auto app = start(dir, bank::routes(), {log, validate, std::make_shared<enrich_metadata>()});
  ASSERT_TRUE(app->dispatch(open_account{"5", "fay"}));
  auto halted = app->dispatch(deposit{"5", 5'000'000});
  ASSERT_FALSE(halted);
  EXPECT_EQ(code_of_dispatch(halted.error()), dispatch_errc::halted);
  EXPECT_NE(describe_error(halted.error()).find("deposit limit"), std::string::npos);
  EXPECT_EQ(app->store().stream_info("account-5")->version, 1u) << "a halted command reached its aggregate";
  ASSERT_TRUE(app->dispatch(withdraw{"5", 1}));
  auto events = app->store().read_stream("account-5", 1, 10);
  ASSERT_TRUE(events);
  // Stored as a msgpack map any client reads, and typed again for us.
  auto meta = nlohmann::json::from_msgpack((*events)[0].metadata);
  EXPECT_EQ(meta["user"], "alice");
  EXPECT_EQ(meta["tenant"], 42);
  auto typed = sourcery::metadata::decode((*events)[0].metadata);
  ASSERT_TRUE(typed);
  EXPECT_EQ(typed->get_string("user"), "alice");
  EXPECT_EQ(typed->get_int("tenant"), 42);
  EXPECT_EQ(typed->get_bool("trusted"), true);
  EXPECT_EQ(typed->get_int("user"), std::nullopt) << "typed: a string is not an integer";
  std::lock_guard guard{*mtx};
  ASSERT_GE(lines->size(), 6u);
  EXPECT_NE((*lines)[0].find("dispatch bank::open_account to account-5"), std::string::npos) << (*lines)[0];
  EXPECT_NE((*lines)[1].find("accepted bank::open_account by account-5 at version 1"), std::string::npos) << (*lines)[1];
  EXPECT_NE((*lines)[3].find("failed bank::deposit for account-5: halted"), std::string::npos) << (*lines)[3];
  EXPECT_NE(lines->back().find("rejected bank::withdraw by account-5: insufficient_funds"), std::string::npos)
    << lines->back();
}

TEST(application, dispatches_from_inside_an_actor_without_blocking) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir);
  ASSERT_TRUE(app->dispatch(open_account{"9", "gus"}));
  auto done = std::make_shared<std::promise<uint64_t>>();
  auto* raw = app.get();
  app->system().spawn([raw, done](caf::event_based_actor* self) -> caf::behavior {
    caf::actor me = caf::actor_cast<caf::actor>(self);
    raw->dispatch_async(deposit{"9", 3}, {}, [me](caf::expected<dispatch_result> r) {
      caf::anon_send(me, r ? r->version : uint64_t{0});
    });
    return {[self, done](uint64_t version) {
      done->set_value(version);
      self->quit();
    }};
  });
  auto f = done->get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get(), 2u);
}

TEST(application, two_instances_on_one_store_stay_consistent) {
  sourcery::testing::temp_dir dir;
  auto opened = persistence::lmdb_store::open({.path = (dir / "shared").string()});
  ASSERT_TRUE(opened);
  std::shared_ptr<persistence::event_store> store = std::move(*opened);
  application_config cfg;
  cfg.store = store;
  auto a = application::start(cfg, bank::routes());
  auto b = application::start(cfg, bank::routes());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE((*a)->dispatch(open_account{"1", "ivy"}));
  ASSERT_TRUE((*a)->dispatch(deposit{"1", 100})); // A's actor now holds balance 100 at version 2
  auto b_withdraws = (*b)->dispatch(withdraw{"1", 80});
  ASSERT_TRUE(b_withdraws && b_withdraws->accepted);
  // A decides on its stale state, its append fails the expected version, it
  // catches up (balance 20) and decides again: refused, nothing lost.
  auto a_withdraws = (*a)->dispatch(withdraw{"1", 80});
  ASSERT_TRUE(a_withdraws) << describe_error(a_withdraws.error());
  EXPECT_FALSE(a_withdraws->accepted);
  EXPECT_EQ(a_withdraws->why.reason, "insufficient_funds");
  EXPECT_EQ(a_withdraws->version, 3u);
  auto a_deposits = (*a)->dispatch(deposit{"1", 1});
  ASSERT_TRUE(a_deposits && a_deposits->accepted);
  EXPECT_EQ(a_deposits->version, 4u);
  EXPECT_EQ((*b)->aggregate_state<account>("account-1")->balance, 21);
  (*a)->stop();
  (*b)->stop();
}

TEST(application, a_crashed_registry_is_restarted_with_its_aggregates) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir);
  ASSERT_TRUE(app->dispatch(open_account{"3", "jon"}));
  ASSERT_TRUE(app->dispatch(deposit{"3", 8}));
  // Find the registry through the tree and kill it.
  auto subtree = app->root().which_children();
  ASSERT_TRUE(subtree);
  auto accounts = std::find_if(subtree->begin(), subtree->end(), [](auto& c) { return c.id == "aggregate:bank::account"; });
  ASSERT_NE(accounts, subtree->end());
  supervision::supervisor sub{app->system(), accounts->actor};
  auto kids = sub.which_children();
  ASSERT_TRUE(kids);
  ASSERT_EQ(kids->size(), 2u);
  caf::scoped_actor self{app->system()};
  self->monitor((*kids)[1].actor);
  caf::anon_send_exit((*kids)[1].actor, caf::exit_reason::kill);
  self->receive([](caf::down_msg&) {});
  // The subtree restarts both; a command that races the restart fails at
  // once, saying it was not executed (never a dispatch timeout), and the
  // next attempt finds the aggregate with its state intact.
  caf::expected<dispatch_result> r = caf::error{};
  dispatch_options patient;
  patient.timeout = 10s;
  for (int i = 0; i < 200; ++i) {
    auto sent = std::chrono::steady_clock::now();
    r = app->dispatch(withdraw{"3", 8}, patient);
    if (r)
      break;
    EXPECT_EQ(r.error(), caf::sec::request_receiver_down) << describe_error(r.error());
    EXPECT_LT(std::chrono::steady_clock::now() - sent, 2s);
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(r) << describe_error(r.error());
  EXPECT_TRUE(r->accepted);
  EXPECT_EQ(r->version, 3u);
  auto after = sub.which_children();
  ASSERT_TRUE(after);
  EXPECT_EQ((*after)[1].restarts, 1u);
}

TEST(application, restarted_on_the_same_directory_it_continues) {
  sourcery::testing::temp_dir dir;
  {
    auto app = start(dir);
    ASSERT_TRUE(app->dispatch(open_account{"1", "hal"}));
    ASSERT_TRUE(app->dispatch(deposit{"1", 64}));
  }
  auto app = start(dir);
  auto r = app->dispatch(withdraw{"1", 64});
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->accepted);
  EXPECT_EQ(r->version, 3u);
  auto tree = app->root().tree();
  ASSERT_TRUE(tree);
  EXPECT_NE(tree->find("aggregate:bank::account [supervisor, permanent]"), std::string::npos) << *tree;
  EXPECT_NE(tree->find("aggregates [supervisor, permanent]"), std::string::npos) << *tree;
  EXPECT_NE(tree->find("registry [worker, permanent]"), std::string::npos) << *tree;
}

} // namespace

TEST(application, two_applications_on_two_directories_in_one_process_stay_apart) {
  sourcery::testing::temp_dir a_dir, b_dir;
  auto a = start(a_dir);
  auto b = start(b_dir);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->dispatch(open_account{"1", "ann"}));
  ASSERT_TRUE(a->dispatch(deposit{"1", 10}));
  ASSERT_TRUE(b->dispatch(open_account{"1", "bob"}));
  EXPECT_EQ(a->aggregate_state<account>("account-1")->balance, 10);
  EXPECT_EQ(b->aggregate_state<account>("account-1")->balance, 0);
  EXPECT_EQ(a->store().head_position(), 2u);
  EXPECT_EQ(b->store().head_position(), 1u);
  // One writer per directory, in this process too.
  application_config again;
  again.data_dir = (a_dir / "data").string();
  EXPECT_FALSE(application::start(again, bank::routes()));
  a->stop();
  ASSERT_TRUE(b->dispatch(deposit{"1", 1})) << "b runs on after a stopped";
}

TEST(application, metrics_count_what_happened) {
  sourcery::testing::temp_dir dir;
  auto app = start(dir);
  ASSERT_TRUE(app->dispatch(open_account{"1", "ann"}));
  ASSERT_TRUE(app->dispatch(deposit{"1", 10}));
  ASSERT_TRUE(app->dispatch(withdraw{"1", 100})); // rejected
  EXPECT_FALSE(app->dispatch(open_account{"", "nobody"}));
  auto& m = app->metrics();
  EXPECT_EQ(m.commands("accepted"), 2u);
  EXPECT_EQ(m.commands("rejected"), 1u);
  EXPECT_EQ(m.commands("invalid_aggregate_identity"), 1u);
  EXPECT_EQ(m.events_appended(), 2u);
  auto text = app->metrics_text();
  for (auto* line : {"sourcery_commands_total{outcome=\"accepted\"} 2", "sourcery_commands_total{outcome=\"rejected\"} 1",
                     "sourcery_commands_total{outcome=\"invalid_aggregate_identity\"} 1",
                     "sourcery_events_appended_total 2", "sourcery_head_position 2",
                     "sourcery_dispatch_latency_seconds_count 4"})
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
}
