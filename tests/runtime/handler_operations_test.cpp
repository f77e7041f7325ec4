// Handlers operated while the application runs (issue 26, item 10): the
// operator's tool lists them, and skip, retry and reset reach the running
// application through the PostgreSQL store it shares with the tool.

#include <atomic>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../../examples/bank/routes.hpp"
#include "../support/child_process.hpp"
#include "../support/eventually.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/application.hpp"

using namespace bank;
using namespace sourcery;
using namespace std::chrono_literals;
using json = nlohmann::json;
using sourcery::testing::eventually;

namespace {

/// Deposits seen, by position; an amount of 666 fails while `poisoned`.
struct seen_deposits {
  std::mutex mtx;
  std::vector<uint64_t> positions;
  std::atomic<bool> poisoned{true};
  size_t count() {
    std::lock_guard guard{mtx};
    return positions.size();
  }
};

struct deposit_watch {
  static constexpr const char* handler_name = "test.deposit_watch";
  using event = std::variant<money_deposited>;
  std::shared_ptr<seen_deposits> seen;
  caf::error handle(const money_deposited& e, const event_context& ctx) {
    if (e.amount == 666 && seen->poisoned.load())
      return caf::make_error(caf::sec::runtime_error, "poison");
    std::lock_guard guard{seen->mtx};
    seen->positions.push_back(ctx.position);
    return {};
  }
};


struct tool_run {
  int status = -1;
  std::string out, err;
};

tool_run sourcery_tool(const std::vector<std::string>& args, const sourcery::testing::temp_dir& dir) {
  auto err_file = dir.str() + ".tool-stderr";
  sourcery::testing::child_process p{SOURCERY_CLI_PATH, args, err_file};
  tool_run r;
  r.out = p.read_all();
  r.status = p.wait();
  std::ifstream in{err_file};
  r.err.assign(std::istreambuf_iterator<char>{in}, {});
  return r;
}

/// The tool's line for handler `name` (`handlers --json`).
json handler_line(const std::string& uri, const sourcery::testing::temp_dir& dir, const std::string& name) {
  auto r = sourcery_tool({"handlers", "--store", uri, "--json"}, dir);
  size_t at = 0;
  while (at < r.out.size()) {
    auto end = r.out.find('\n', at);
    auto j = json::parse(r.out.substr(at, end - at));
    if (j["name"] == name)
      return j;
    at = end + 1;
  }
  return json{};
}

/// The bank on a schema of its own, with deposit_watch, which stops on a
/// deposit of 666 while `seen->poisoned`.
class handler_operations : public ::testing::Test {
protected:
  sourcery::testing::temp_dir dir;
  std::string uri = sourcery::testing::test_pg_store(dir);
  std::optional<std::unique_ptr<application>> app;
  std::shared_ptr<seen_deposits> seen = std::make_shared<seen_deposits>();
  std::optional<std::shared_ptr<handler_status>> status;

  void SetUp() override {
    application_config cfg;
    cfg.store_uri = uri;
    auto started = application::start(cfg, bank::routes());
    ASSERT_TRUE(started) << describe_error(started.error());
    app = std::move(*started);
    handler_options opts;
    opts.on_error.max_retries = 0;
    opts.on_error.then = error_action::kind::stop;
    auto added = (*app)->add_handler<deposit_watch>(opts, false, [seen = seen] {
      auto h = std::make_unique<deposit_watch>();
      h->seen = seen;
      return h;
    });
    ASSERT_TRUE(added) << describe_error(added.error());
    status = *added;
  }
};

} // namespace

TEST_F(handler_operations, skip_retry_and_reset_reach_the_running_application) {
  ASSERT_TRUE((*app)->dispatch(open_account{"a", "ann"}));
  ASSERT_TRUE((*app)->dispatch(deposit{"a", 1}));
  ASSERT_TRUE((*app)->dispatch(deposit{"a", 666})); // stops the handler
  ASSERT_TRUE((*app)->dispatch(deposit{"a", 2}));
  ASSERT_TRUE(eventually([&] { return static_cast<bool>((*status)->stopped()); }));
  auto poison_at = (*status)->stopped_at();
  ASSERT_TRUE(poison_at);

  // The tool sees it stopped, on which event.
  json line;
  ASSERT_TRUE(eventually([&] {
    line = handler_line(uri, dir, "test.deposit_watch");
    return line.value("state", "") == "stopped";
  })) << line.dump();
  EXPECT_EQ(line["kind"], "handler");
  EXPECT_EQ(line["stopped_at"]["position"], *poison_at);
  EXPECT_EQ(line["stopped_at"]["type"], "bank.money_deposited");

  // skip: the running application goes on after it; the event is parked.
  auto skipped = sourcery_tool({"skip", "test.deposit_watch", "--store", uri}, dir);
  EXPECT_EQ(skipped.status, 0) << skipped.out << skipped.err;
  EXPECT_NE(skipped.out.find("done by the running application"), std::string::npos) << skipped.out;
  ASSERT_TRUE(eventually([&] { return seen->count() == 2; })) << "the deposit after the poison one";
  EXPECT_FALSE((*status)->stopped());
  ASSERT_TRUE(eventually([&] {
    line = handler_line(uri, dir, "test.deposit_watch");
    return line.value("state", "") == "running";
  })) << line.dump();
  EXPECT_EQ(line["parked"], json::array({*poison_at}));

  // retry: stopped again on a new poison event, then handled once it heals.
  ASSERT_TRUE((*app)->dispatch(deposit{"a", 666}));
  ASSERT_TRUE(eventually([&] { return static_cast<bool>((*status)->stopped()); }));
  auto second_poison = *(*status)->stopped_at();
  ASSERT_TRUE(eventually([&] { // as the operator finds it
    line = handler_line(uri, dir, "test.deposit_watch");
    return line.value("state", "") == "stopped";
  })) << line.dump();
  EXPECT_EQ(line["stopped_at"]["position"], second_poison);
  seen->poisoned = false;
  auto retried = sourcery_tool({"retry", "test.deposit_watch", "--store", uri}, dir);
  EXPECT_EQ(retried.status, 0) << retried.out << retried.err;
  ASSERT_TRUE(eventually([&] { return seen->count() == 3; }));
  {
    std::lock_guard guard{seen->mtx};
    EXPECT_EQ(seen->positions.back(), second_poison);
  }

  // reset to the start: every deposit comes again (the skipped one too, now
  // that it heals), without a restart of the application.
  auto nothing = sourcery_tool({"reset", "test.deposit_watch", "--store", uri}, dir);
  EXPECT_EQ(nothing.status, 2) << "--to is required";
  auto reset = sourcery_tool({"reset", "test.deposit_watch", "--to", "start", "--store", uri}, dir);
  EXPECT_EQ(reset.status, 0) << reset.out << reset.err;
  ASSERT_TRUE(eventually([&] { return seen->count() == 3 + 4; })) << seen->count();
  auto head = (*app)->store().head_position();
  ASSERT_TRUE(eventually([&] { return (*status)->position() == head; }));

  // A stopped handler is what skip and retry are for; others are refused.
  auto refused = sourcery_tool({"skip", "test.deposit_watch", "--store", uri}, dir);
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.err.find("has not stopped"), std::string::npos) << refused.err;
  auto unknown = sourcery_tool({"retry", "nobody", "--store", uri}, dir);
  EXPECT_EQ(unknown.status, 2);
  (*app)->stop();
}

// A parked event handled again alone, as EventStoreDB replays a parked
// message: failing, it stays parked; once the cause is gone, it is handled
// and parked no more -- and the handler's position does not move.
TEST_F(handler_operations, a_parked_event_is_retried_alone_and_stays_parked_while_it_fails) {
  ASSERT_TRUE((*app)->dispatch(open_account{"a", "ann"}));
  ASSERT_TRUE((*app)->dispatch(deposit{"a", 666})); // stops the handler
  ASSERT_TRUE((*app)->dispatch(deposit{"a", 2}));
  ASSERT_TRUE(eventually([&] { return static_cast<bool>((*status)->stopped()); }));
  auto poison_at = *(*status)->stopped_at();
  ASSERT_TRUE(eventually([&] { return handler_line(uri, dir, "test.deposit_watch").value("state", "") == "stopped"; }));
  ASSERT_EQ(sourcery_tool({"skip", "test.deposit_watch", "--store", uri}, dir).status, 0);
  ASSERT_TRUE(eventually([&] { return seen->count() == 1; })) << "the deposit after the poison one";
  auto head = (*app)->store().head_position();
  ASSERT_TRUE(eventually([&] { return (*status)->position() == head; }));
  auto at = std::to_string(poison_at);

  // Still poisoned: handled again, it fails again, and stays parked.
  auto failed = sourcery_tool({"retry", "test.deposit_watch", "--parked", at, "--store", uri}, dir);
  EXPECT_EQ(failed.status, 1) << failed.out << failed.err;
  EXPECT_NE(failed.err.find("stays parked"), std::string::npos) << failed.err;
  EXPECT_EQ(handler_line(uri, dir, "test.deposit_watch")["parked"], json::array({poison_at}));
  EXPECT_EQ(seen->count(), 1u);

  // Healed: handled alone, parked no more; the handler runs on where it was.
  seen->poisoned = false;
  auto retried = sourcery_tool({"retry", "test.deposit_watch", "--parked", at, "--store", uri}, dir);
  EXPECT_EQ(retried.status, 0) << retried.out << retried.err;
  ASSERT_EQ(seen->count(), 2u);
  {
    std::lock_guard guard{seen->mtx};
    EXPECT_EQ(seen->positions.back(), poison_at);
  }
  EXPECT_EQ(handler_line(uri, dir, "test.deposit_watch")["parked"], json::array());
  EXPECT_EQ((*status)->position(), head) << "its position stays";
  EXPECT_FALSE((*status)->stopped());
  ASSERT_TRUE((*app)->dispatch(deposit{"a", 3}));
  ASSERT_TRUE(eventually([&] { return seen->count() == 3; })) << "it goes on with new events";

  // What is not parked (any more) is refused.
  auto again = sourcery_tool({"retry", "test.deposit_watch", "--parked", at, "--store", uri}, dir);
  EXPECT_EQ(again.status, 2) << again.out << again.err;
  EXPECT_NE(again.err.find("is not parked"), std::string::npos) << again.err;
  (*app)->stop();
}
