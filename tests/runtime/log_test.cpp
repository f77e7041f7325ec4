// Structured logging: the line format, levels per component, and what the
// runtime logs — supervisor reports, handler failures with their decision,
// slow commands.

#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../../examples/bank/routes.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/observability/log.hpp"

using namespace sourcery;
using namespace std::chrono_literals;

namespace {

/// Lines a logger wrote, for the test to read while the runtime writes.
struct captured {
  std::mutex mtx;
  std::vector<std::string> lines;

  log_config config(std::string_view spec = "info") {
    auto cfg = log_config::parse(spec);
    EXPECT_TRUE(cfg);
    cfg->sink = [this](std::string_view line) {
      std::lock_guard guard{mtx};
      lines.emplace_back(line);
    };
    return *cfg;
  }
  std::vector<std::string> with(std::string_view text) {
    std::lock_guard guard{mtx};
    std::vector<std::string> out;
    for (auto& l : lines)
      if (l.find(text) != std::string::npos)
        out.push_back(l);
    return out;
  }
  /// Waits (bounded) for a line holding `text`.
  bool wait_for(std::string_view text) {
    for (int i = 0; i < 400; ++i) {
      if (!with(text).empty())
        return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
};

TEST(log, lines_are_logfmt_with_quoting_where_needed) {
  captured out;
  logger log{out.config()};
  log.warn("supervisor", "child terminated",
           {{"child", "handler:x"}, {"reason", "said \"no\"\nthen left"}, {"restarts", 3}, {"empty", ""}});
  ASSERT_EQ(out.lines.size(), 1u);
  auto& line = out.lines[0];
  EXPECT_EQ(line.rfind("ts=20", 0), 0u) << line;
  EXPECT_NE(line.find("Z level=warn component=supervisor msg=\"child terminated\" child=handler:x "
                      "reason=\"said \\\"no\\\"\\nthen left\" restarts=3 empty=\"\""),
            std::string::npos)
    << line;
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one line per record";
}

TEST(log, json_lines_keep_numbers_as_numbers) {
  captured out;
  auto cfg = out.config();
  cfg.format = log_format::json;
  logger log{cfg};
  log.error("handler", "event failed", {{"position", 42}, {"decision", "stop"}, {"duration_ms", 1.5}});
  ASSERT_EQ(out.lines.size(), 1u);
  auto j = nlohmann::json::parse(out.lines[0]);
  EXPECT_EQ(j["level"], "error");
  EXPECT_EQ(j["component"], "handler");
  EXPECT_EQ(j["msg"], "event failed");
  EXPECT_EQ(j["position"], 42);
  EXPECT_EQ(j["decision"], "stop");
  EXPECT_DOUBLE_EQ(j["duration_ms"].get<double>(), 1.5);
  EXPECT_EQ(out.lines[0].find("\"ts\""), 1u) << "the time first";
}

TEST(log, levels_are_configured_per_component) {
  captured out;
  logger log{out.config("warn, dispatch=debug ,http=off")};
  log.info("supervisor", "dropped");
  log.warn("supervisor", "kept 1");
  log.debug("dispatch", "kept 2");
  log.error("http", "dropped");
  EXPECT_EQ(out.lines.size(), 2u);
  EXPECT_TRUE(log.enabled(log_level::debug, "dispatch"));
  EXPECT_FALSE(log.enabled(log_level::trace, "dispatch"));
  EXPECT_FALSE(log.enabled(log_level::error, "http"));
  EXPECT_FALSE(log.enabled(log_level::info, "anything"));

  auto bad = log_config::parse("info,supervisor=loud");
  ASSERT_FALSE(bad);
  EXPECT_NE(describe_error(bad.error()).find("supervisor=loud"), std::string::npos);
  EXPECT_FALSE(log_config::parse("=debug"));
  auto only_component = log_config::parse("dispatch=trace");
  ASSERT_TRUE(only_component);
  EXPECT_EQ(only_component->level, log_level::info);
}

// -- what the runtime logs -------------------------------------------------------------

/// Fails on deposits of 666, always.
struct fussy {
  static constexpr const char* handler_name = "test.fussy";
  using event = std::variant<bank::money_deposited>;
  caf::error handle(const bank::money_deposited& e, const event_context&) {
    return e.amount == 666 ? caf::make_error(caf::sec::runtime_error, "poison") : caf::error{};
  }
};

class runtime_log : public ::testing::Test {
protected:
  void start(std::chrono::milliseconds slow = 250ms) {
    application_config cfg;
    cfg.data_dir = (dir_ / "store").string();
    cfg.log = out_.config();
    cfg.slow_command = slow;
    auto app = application::start(cfg, bank::routes());
    ASSERT_TRUE(app) << describe_error(app.error());
    app_ = std::move(*app);
  }

  sourcery::testing::temp_dir dir_;
  captured out_;
  std::unique_ptr<application> app_;
};

TEST_F(runtime_log, supervisor_restarts_are_logged) {
  start();
  handler_options o;
  auto status = app_->add_handler<fussy>(o);
  ASSERT_TRUE(status);
  {
    // In a scope: a held handle of the (detached) handler would hold up the stop.
    auto kids = app_->root().which_children();
    ASSERT_TRUE(kids);
    for (auto& k : *kids)
      if (k.id == "handler:test.fussy")
        caf::anon_send_exit(k.actor, caf::exit_reason::kill);
  }
  ASSERT_TRUE(out_.wait_for("msg=\"child restarted\""));
  auto terminated = out_.with("msg=\"child terminated\"");
  ASSERT_FALSE(terminated.empty());
  EXPECT_NE(terminated[0].find("level=warn component=supervisor"), std::string::npos) << terminated[0];
  EXPECT_NE(terminated[0].find("supervisor=app_root child=handler:test.fussy reason=kill"), std::string::npos)
    << terminated[0];
  EXPECT_NE(out_.with("msg=\"child restarted\"")[0].find("level=info"), std::string::npos);

  // A dynamic child is named by its spec and argument: the aggregate's stream.
  ASSERT_TRUE(app_->dispatch(bank::open_account{"z", "zoe"}));
  {
    // aggregate:bank::account -> its supervisor -> the instances' supervisor.
    auto top = app_->root().which_children();
    ASSERT_TRUE(top);
    for (auto& c : *top) {
      if (c.id != "aggregate:bank::account" || !c.actor)
        continue;
      auto sub = supervision::supervisor{app_->system(), c.actor}.which_children();
      ASSERT_TRUE(sub && !sub->empty());
      auto instances = supervision::supervisor{app_->system(), (*sub)[0].actor}.which_children();
      ASSERT_TRUE(instances && !instances->empty());
      for (auto& k : *instances)
        caf::anon_send_exit(k.actor, caf::exit_reason::kill);
    }
  }
  ASSERT_TRUE(out_.wait_for("child=aggregate:account-z"));
}

TEST_F(runtime_log, handler_failures_are_logged_with_the_decision) {
  start();
  handler_options o;
  o.on_error.max_retries = 2;
  o.on_error.initial_delay = 1ms;
  std::atomic<int> theirs{0};
  o.on_error.observer = [&theirs](const handler_failure&) { ++theirs; };
  auto status = app_->add_handler<fussy>(o);
  ASSERT_TRUE(status);
  ASSERT_TRUE(app_->dispatch(bank::open_account{"p", "pat"}));
  ASSERT_TRUE(app_->dispatch(bank::deposit{"p", 666}));
  ASSERT_TRUE(out_.wait_for("decision=stop"));
  auto failures = out_.with("msg=\"event failed\"");
  ASSERT_EQ(failures.size(), 3u);
  EXPECT_NE(failures[0].find("level=warn component=handler"), std::string::npos) << failures[0];
  EXPECT_NE(failures[0].find("handler=\"handler test.fussy\" position=2 stream=account-p type=bank.money_deposited "
                             "failures=1 decision=retry retry_in_ms=1"),
            std::string::npos)
    << failures[0];
  EXPECT_NE(failures[0].find("poison"), std::string::npos);
  EXPECT_NE(failures[1].find("failures=2 decision=retry retry_in_ms=2"), std::string::npos) << failures[1];
  EXPECT_NE(failures[2].find("level=error"), std::string::npos) << failures[2];
  EXPECT_NE(failures[2].find("failures=3 decision=stop"), std::string::npos) << failures[2];
  EXPECT_EQ(theirs.load(), 3) << "the application's own observer still hears";
}

TEST_F(runtime_log, slow_commands_are_logged_with_what_they_were) {
  start(0ms); // every command is slow
  ASSERT_TRUE(app_->dispatch(bank::open_account{"s", "sam"}));
  ASSERT_TRUE(app_->dispatch(bank::withdraw{"s", 5})); // rejected: no money
  auto slow = out_.with("msg=\"slow command\"");
  ASSERT_EQ(slow.size(), 2u);
  EXPECT_NE(slow[0].find("level=warn component=dispatch"), std::string::npos) << slow[0];
  EXPECT_NE(slow[0].find("aggregate=account-s duration_ms="), std::string::npos) << slow[0];
  EXPECT_NE(slow[0].find("outcome=accepted"), std::string::npos) << slow[0];
  EXPECT_NE(slow[1].find("outcome=rejected"), std::string::npos) << slow[1];
  app_.reset();

  captured quiet;
  start(); // the default threshold: quick commands are not logged
  ASSERT_TRUE(app_->dispatch(bank::open_account{"q", "quinn"}));
  EXPECT_TRUE(out_.with("account-q").empty());
}

} // namespace
