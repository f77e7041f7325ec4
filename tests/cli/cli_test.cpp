// The sourcery tool as an operator runs it: a subprocess on a real store.

#include <csignal>
#include <fstream>

#include <gtest/gtest.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>

#include "../support/child_process.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/lmdb_store.hpp"

using namespace sourcery::persistence;
using sourcery::testing::child_process;
using json = nlohmann::json;

namespace {

bytes map_of(const std::string& key, int64_t value) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  pk.pack_map(1);
  pk.pack(key);
  pk.pack(value);
  return bytes(buf.data(), buf.data() + buf.size());
}

event_data event(const std::string& type, int64_t amount) {
  event_data e;
  e.type = type;
  e.data = map_of("amount", amount);
  e.causation_id = "cmd-" + std::to_string(amount);
  return e;
}

struct cli : ::testing::Test {
  sourcery::testing::temp_dir dir;
  std::unique_ptr<lmdb_store> store;

  void SetUp() override {
    auto s = lmdb_store::open({.path = dir.str()});
    ASSERT_TRUE(s);
    store = std::move(*s);
    ASSERT_TRUE(store->append("account-1", expected_version::any(), {event("bank.opened", 0), event("bank.deposited", 5)}));
    ASSERT_TRUE(store->append("account-2", expected_version::any(), {event("bank.deposited", 7)}));
    auto odd = event("who.knows", 1);
    odd.data = {}; // an empty payload
    ASSERT_TRUE(store->append("account-1", expected_version::any(), {odd}));
  }

  /// Runs the tool to its end; its stdout, and its exit status in `status`.
  std::string run(std::vector<std::string> args, int& status) {
    child_process p{SOURCERY_CLI_PATH, args};
    auto out = p.read_all();
    status = p.wait();
    return out;
  }

  std::vector<json> lines(const std::string& out) {
    std::vector<json> v;
    size_t i = 0;
    while (i < out.size()) {
      auto j = out.find('\n', i);
      v.push_back(json::parse(out.substr(i, j - i)));
      i = j + 1;
    }
    return v;
  }
};

} // namespace

TEST_F(cli, read_prints_a_stream_with_its_metadata) {
  int status = -1;
  auto out = run({"read", "account-1", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(out.find("account-1 v1  bank.opened"), std::string::npos) << out;
  EXPECT_NE(out.find("data: {\"amount\":5}"), std::string::npos) << out;
  EXPECT_NE(out.find("causation: cmd-5"), std::string::npos) << out;
  EXPECT_EQ(out.find("account-2"), std::string::npos) << out;

  auto events = lines(run({"read", "account-1", "--data-dir", dir.str(), "--json", "--from", "2"}, status));
  EXPECT_EQ(status, 0);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["version"], 2);
  EXPECT_EQ(events[0]["type"], "bank.deposited");
  EXPECT_EQ(events[0]["data"]["amount"], 5);
  EXPECT_EQ(events[0]["position"], 2);
  EXPECT_EQ(events[0]["event_id"].get<std::string>().size(), 36u);
  EXPECT_EQ(events[1]["type"], "who.knows"); // a type nobody registered reads as it is
}

TEST_F(cli, all_reads_the_global_log_from_a_position) {
  int status = -1;
  auto events = lines(run({"all", "--data-dir", dir.str(), "--from", "2", "--json"}, status));
  EXPECT_EQ(status, 0);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["position"], 2);
  EXPECT_EQ(events[1]["stream"], "account-2");
  EXPECT_EQ(events[2]["position"], 4);
  events = lines(run({"all", "--data-dir", dir.str(), "--json", "--limit", "1"}, status));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["position"], 1);
}

TEST_F(cli, tail_sees_appends_from_another_process) {
  child_process tail{SOURCERY_CLI_PATH, {"tail", "--data-dir", dir.str(), "--from", "5", "--json"}};
  ASSERT_TRUE(store->append("account-3", expected_version::any(), {event("bank.deposited", 42)}));
  auto line = tail.read_line();
  auto e = json::parse(line);
  EXPECT_EQ(e["position"], 5);
  EXPECT_EQ(e["stream"], "account-3");
  EXPECT_EQ(e["data"]["amount"], 42);
  tail.signal(SIGTERM);
  EXPECT_EQ(tail.wait(), 0);
}

TEST_F(cli, bad_arguments_are_usage_errors) {
  int status = -1;
  for (auto args : std::vector<std::vector<std::string>>{{},
                                                          {"frobnicate"},
                                                          {"read"},
                                                          {"read", "a", "b"},
                                                          {"all", "--from", "minus"},
                                                          {"all", "--from"},
                                                          {"all", "--colour"},
                                                          {"all", "--data-dir", "/nonexistent/store"}}) {
    auto out = run(args, status);
    EXPECT_EQ(status, 2) << testing::PrintToString(args);
    EXPECT_EQ(out, "") << testing::PrintToString(args); // the usage goes to stderr
  }
  auto help = run({"read", "--help"}, status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(help.find("usage: sourcery COMMAND"), std::string::npos);
}

TEST_F(cli, a_directory_without_a_store_is_a_clear_failure) {
  sourcery::testing::temp_dir other;
  std::ofstream{other / "data.mdb"} << "not an LMDB file at all, just text that is long enough to look like one";
  int status = -1;
  run({"all", "--data-dir", other.str()}, status);
  EXPECT_EQ(status, 1);
}
