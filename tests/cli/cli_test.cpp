// The sourcery tool as an operator runs it: a subprocess on a real store.

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <iterator>

#include <gtest/gtest.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>

#include "../support/checked.hpp"
#include "../support/child_process.hpp"
#include "../support/damaged_store.hpp"
#include "../support/postgres.hpp"
#include "../support/read_model_holder.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/postgres_coordination.hpp"
#include "sourcery/persistence/postgres_projection_store.hpp"
#include "sourcery/persistence/projection_store.hpp"

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
  /// Its stderr is kept in `errors`.
  std::string run(std::vector<std::string> args, int& status, const char* program = SOURCERY_CLI_PATH) {
    auto err_file = dir.str() + ".stderr";
    child_process p{program, args, err_file};
    auto out = p.read_all();
    status = p.wait();
    std::ifstream in{err_file};
    errors.assign(std::istreambuf_iterator<char>{in}, {});
    return out;
  }
  std::string errors;

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
                                                          {"all", "--data-dir", "/nonexistent/store"},
                                                          {"stats", "--from", "1"},
                                                          {"verify", "extra"},
                                                          {"rebuild"},
                                                          {"export", "--limit", "3"}}) {
    auto out = run(args, status);
    EXPECT_EQ(status, 2) << testing::PrintToString(args);
    EXPECT_EQ(out, "") << testing::PrintToString(args); // the usage goes to stderr
    // What was wrong, and where the help is.
    EXPECT_EQ(errors.rfind("sourcery: ", 0), 0u) << errors;
    EXPECT_NE(errors.find("Run 'sourcery"), std::string::npos) << errors;
  }
  auto help = run({"--help"}, status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(help.find("Usage: sourcery [OPTIONS] SUBCOMMAND"), std::string::npos) << help;
  for (auto command : {"streams", "read", "all", "tail", "stats", "verify", "export", "import", "rebuild"}) {
    EXPECT_NE(help.find(std::string{"\n  "} + command), std::string::npos) << command;
    // Each command has its own help, naming only its own options.
    auto own = run({command, "--help"}, status);
    EXPECT_EQ(status, 0);
    EXPECT_NE(own.find(std::string{"Usage: sourcery "} + command), std::string::npos) << own;
    EXPECT_NE(own.find("--data-dir"), std::string::npos) << own;
    EXPECT_EQ(own.find("--output"), std::string{command} == "export" ? own.find("--output") : std::string::npos)
      << own;
    EXPECT_EQ(run({"help", command}, status), own);
  }
}

TEST_F(cli, a_directory_without_a_store_is_a_clear_failure) {
  sourcery::testing::temp_dir other;
  std::ofstream{other / "data.mdb"} << "not an LMDB file at all, just text that is long enough to look like one";
  int status = -1;
  run({"all", "--data-dir", other.str()}, status);
  EXPECT_EQ(status, 1);
  // An empty directory holds no store: said so, as a missing one.
  sourcery::testing::temp_dir empty;
  std::filesystem::create_directories(empty.str());
  run({"streams", "--data-dir", empty.str()}, status);
  EXPECT_EQ(status, 2);
  EXPECT_NE(errors.find("no store at " + empty.str()), std::string::npos) << errors;
  EXPECT_EQ(errors.find("No such file"), std::string::npos) << errors;
}

// -- streams, stats ------------------------------------------------------------------

TEST_F(cli, streams_lists_every_stream_with_version_and_last_write) {
  ASSERT_TRUE(store->delete_stream("account-2", expected_version::any()));
  int status = -1;
  auto text = run({"streams", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(text.find("account-1"), std::string::npos) << text;
  EXPECT_NE(text.find("deleted"), std::string::npos) << text;
  auto rows = lines(run({"streams", "--data-dir", dir.str(), "--json"}, status));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["stream"], "account-1");
  EXPECT_EQ(rows[0]["version"], 3);
  EXPECT_EQ(rows[0]["deleted"], false);
  EXPECT_EQ(rows[1]["deleted"], true);
  auto last_write = rows[0]["last_write"].get<std::string>();
  EXPECT_EQ(last_write.size(), 27u) << last_write; // 2026-11-23T04:32:57.123456Z
  EXPECT_EQ(last_write.back(), 'Z');
}

TEST_F(cli, stats_reports_counts_sizes_and_how_far_behind_each_checkpoint_is) {
  ASSERT_TRUE(store->save_checkpoint("handler:mailer", 1));
  ASSERT_TRUE(store->save_checkpoint("process:transfers", 4));
  {
    sourcery::persistence::projection_store_options po;
    po.path = dir.str() + "/read-models";
    auto models = sourcery::persistence::projection_store::open(po);
    ASSERT_TRUE(models);
    ASSERT_FALSE((*models)->write("bank.balances", 3, [](auto& w) {
      w.put("t", "k", "v");
      return caf::error{};
    }));
  }
  int status = -1;
  auto out = run({"stats", "--data-dir", dir.str(), "--json"}, status);
  ASSERT_EQ(status, 0) << errors;
  auto j = json::parse(out);
  EXPECT_EQ(j["data_dir"], dir.str()) << "a string, not an array";
  EXPECT_EQ(j["head_position"], 4);
  EXPECT_EQ(j["events"], 4);
  EXPECT_EQ(j["streams"], 2);
  EXPECT_GT(j["map"]["size"].get<uint64_t>(), j["map"]["used"].get<uint64_t>());
  EXPECT_GT(j["map"]["file_size"].get<uint64_t>(), 0u);
  ASSERT_EQ(j["checkpoints"].size(), 3u);
  EXPECT_EQ(j["checkpoints"][0]["name"], "handler:mailer");
  EXPECT_EQ(j["checkpoints"][0]["kind"], "handler");
  EXPECT_EQ(j["checkpoints"][0]["behind"], 3);
  EXPECT_EQ(j["checkpoints"][1]["kind"], "process manager");
  EXPECT_EQ(j["checkpoints"][1]["behind"], 0);
  EXPECT_EQ(j["checkpoints"][2]["name"], "bank.balances");
  EXPECT_EQ(j["checkpoints"][2]["kind"], "projection");
  EXPECT_EQ(j["checkpoints"][2]["behind"], 1);
  bool events_db = false;
  for (auto& db : j["databases"])
    events_db = events_db || (db["name"] == "events" && db["entries"] == 4 && db["bytes"].get<uint64_t>() > 0);
  EXPECT_TRUE(events_db) << out;
  auto text = run({"stats", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(text.find("head position  4"), std::string::npos) << text;
  EXPECT_NE(text.find("handler:mailer"), std::string::npos) << text;
}

// -- verify --------------------------------------------------------------------------

TEST_F(cli, verify_passes_an_intact_store_even_while_it_is_written) {
  int status = -1;
  auto out = run({"verify", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 0) << out << errors;
  EXPECT_NE(out.find("ok: the store is intact"), std::string::npos) << out;
  EXPECT_NE(errors.find("verify: done, 4 events"), std::string::npos) << errors;
  // The store stays open for writing in this process: the tool reads beside it.
  ASSERT_TRUE(store->append("account-3", expected_version::any(), {event("bank.deposited", 1)}));
  auto j = json::parse(run({"verify", "--data-dir", dir.str(), "--json"}, status));
  EXPECT_EQ(status, 0);
  EXPECT_EQ(j["ok"], true);
  EXPECT_EQ(j["events"], 5);
}

struct cli_verify : ::testing::TestWithParam<sourcery::testing::damage> {};

TEST_P(cli_verify, reports_the_damage_of_a_copy_and_fails_without_writing) {
  sourcery::testing::temp_dir dir;
  auto path = (dir / "store").string();
  sourcery::testing::fill(path);
  {
    sourcery::testing::raw_env env{path};
    GetParam().inflict(env);
  }
  auto data = [&] {
    std::ifstream in{path + "/data.mdb", std::ios::binary};
    return std::string{std::istreambuf_iterator<char>{in}, {}};
  };
  auto before = data();
  child_process p{SOURCERY_CLI_PATH, {"verify", "--data-dir", path, "--json"}, (dir / "stderr").string()};
  auto out = p.read_all();
  EXPECT_EQ(p.wait(), 1) << out;
  auto j = json::parse(out);
  EXPECT_EQ(j["ok"], false);
  std::set<std::string> kinds;
  for (auto& problem : j["problems"]) {
    kinds.insert(problem["kind"].get<std::string>());
    EXPECT_FALSE(problem["message"].get<std::string>().empty());
  }
  EXPECT_EQ(kinds, GetParam().expected) << out;
  EXPECT_EQ(data(), before) << "verify never writes";
  child_process text{SOURCERY_CLI_PATH, {"verify", "--data-dir", path}, (dir / "stderr").string()};
  auto report = text.read_all();
  EXPECT_EQ(text.wait(), 1);
  EXPECT_NE(report.find("DAMAGED"), std::string::npos) << report;
  EXPECT_NE(report.find(*GetParam().expected.begin()), std::string::npos) << report;
}

INSTANTIATE_TEST_SUITE_P(kinds, cli_verify, ::testing::ValuesIn(sourcery::testing::damages()),
                         [](const auto& info) { return std::string{info.param.name}; });

TEST(cli_pages, verify_reports_a_damaged_page_and_other_commands_refuse_the_store) {
  sourcery::testing::temp_dir dir;
  auto path = (dir / "store").string();
  sourcery::testing::fill(path);
  {
    // Every page whose header names itself now names another: the trees'
    // own pages among them.
    std::fstream f{path + "/data.mdb", std::ios::in | std::ios::out | std::ios::binary};
    std::string bytes{std::istreambuf_iterator<char>{f}, {}};
    for (size_t page = 2; (page + 1) * 4096 <= bytes.size(); ++page) {
      uint64_t named = 0;
      std::memcpy(&named, bytes.data() + page * 4096, 8);
      if (named == page) {
        uint64_t other = page + 1'000'000;
        std::memcpy(bytes.data() + page * 4096, &other, 8);
      }
    }
    f.seekp(0);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  child_process p{SOURCERY_CLI_PATH, {"verify", "--data-dir", path, "--json"}, (dir / "stderr").string()};
  auto out = p.read_all();
  EXPECT_EQ(p.wait(), 1) << out;
  auto j = json::parse(out);
  EXPECT_EQ(j["ok"], false);
  ASSERT_EQ(j["problems"].size(), 1u) << out;
  EXPECT_EQ(j["problems"][0]["kind"], "damaged_page");
  EXPECT_NE(j["problems"][0]["message"].get<std::string>().find("its header names page"), std::string::npos) << out;
  child_process stats{SOURCERY_CLI_PATH, {"stats", "--data-dir", path}, (dir / "stderr").string()};
  stats.read_all();
  EXPECT_EQ(stats.wait(), 1);
  std::ifstream err{(dir / "stderr").string()};
  std::string errors{std::istreambuf_iterator<char>{err}, {}};
  EXPECT_NE(errors.find("corrupt_store"), std::string::npos) << errors;
  EXPECT_NE(errors.find("damaged: page"), std::string::npos) << errors;
}

// -- export, import ------------------------------------------------------------------

TEST_F(cli, export_then_import_round_trips_exactly) {
  ASSERT_TRUE(store->append("odd \xff bytes", expected_version::any(), {event("bank.deposited", 9)}));
  ASSERT_TRUE(store->delete_stream("account-2", expected_version::any()));
  ASSERT_TRUE(store->save_snapshot({"account-1", 2, 3, "account", map_of("balance", 5), 0}));
  ASSERT_TRUE(store->save_checkpoint("handler:mailer", 4));
  int status = -1;
  auto file = dir.str() + ".ndjson";
  run({"export", "--data-dir", dir.str(), "--output", file}, status);
  ASSERT_EQ(status, 0) << errors;
  sourcery::testing::temp_dir other;
  auto copy = (other / "copy").string();
  auto out = run({"import", "--data-dir", copy, "--input", file}, status);
  ASSERT_EQ(status, 0) << errors;
  EXPECT_NE(out.find("imported 5 events"), std::string::npos) << out;
  auto summary = json::parse(run({"import", "--data-dir", (other / "again").string(), "--input", file, "--json"}, status));
  EXPECT_EQ(status, 0);
  EXPECT_EQ(summary["imported"], 5);

  auto again = run({"export", "--data-dir", copy}, status);
  ASSERT_EQ(status, 0);
  std::ifstream in{file};
  std::string first{std::istreambuf_iterator<char>{in}, {}};
  EXPECT_EQ(again, first) << "exporting the copy gives the same file";
  auto header = lines(first).front();
  EXPECT_EQ(header["kind"], "sourcery.export");
  EXPECT_EQ(lines(first).back()["kind"], "end");

  // Through the store's API: the same events, streams, snapshot, checkpoint.
  auto opened = lmdb_store::open({.path = copy, .read_only = true});
  ASSERT_TRUE(opened);
  auto& restored = **opened;
  auto a = store->read_all(1, 100), b = restored.read_all(1, 100);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, *b);
  for (auto id : {"account-1", "account-2", "odd \xff bytes"}) {
    auto x = store->stream_info(id), y = restored.stream_info(id);
    ASSERT_TRUE(x && y);
    EXPECT_EQ(x->version, y->version);
    EXPECT_EQ(x->deleted, y->deleted);
    EXPECT_EQ(x->created_at, y->created_at);
    EXPECT_EQ(x->updated_at, y->updated_at);
  }
  EXPECT_EQ(store->load_snapshot("account-1").value(), restored.load_snapshot("account-1").value());
  EXPECT_EQ(restored.load_checkpoint("handler:mailer").value(), std::optional<uint64_t>{4});
}

TEST_F(cli, import_refuses_bad_input_and_leaves_nothing_behind) {
  int status = -1;
  auto file = dir.str() + ".ndjson";
  run({"export", "--data-dir", dir.str(), "--output", file}, status);
  ASSERT_EQ(status, 0);
  std::ifstream in{file};
  std::string good{std::istreambuf_iterator<char>{in}, {}};
  sourcery::testing::temp_dir other;
  auto attempt = [&](const std::string& text) {
    auto bad = (other / "input").string();
    std::ofstream{bad} << text;
    auto target = (other / "target").string();
    run({"import", "--data-dir", target, "--input", bad}, status);
    EXPECT_EQ(status, 1) << text;
    EXPECT_FALSE(std::filesystem::exists(target)) << "a failed import leaves no store";
    EXPECT_FALSE(std::filesystem::exists((other / ".target.importing"))) << "nor its staging directory";
    return errors;
  };
  auto last_line = good.rfind('\n', good.size() - 2);
  EXPECT_NE(attempt(good.substr(0, last_line + 1)).find("cut short"), std::string::npos) << errors;
  EXPECT_NE(attempt("").find("empty"), std::string::npos) << errors;
  EXPECT_NE(attempt("{\"kind\":\"event\"}\n").find("not a Sourcery export"), std::string::npos) << errors;
  auto garbled = good;
  garbled.insert(good.find('\n') + 1, "{not json\n");
  EXPECT_NE(attempt(garbled).find("line 2: not JSON"), std::string::npos) << errors;
  auto reordered = good;
  auto second = reordered.find('\n') + 1;
  auto third = reordered.find('\n', second) + 1;
  auto moved = reordered.substr(second, third - second);
  reordered.erase(second, third - second);
  reordered.insert(reordered.find('\n', second) + 1, moved);
  EXPECT_NE(attempt(reordered).find("does not continue the log"), std::string::npos) << errors;
  auto unknown = good;
  unknown.insert(unknown.rfind("{\"kind\":\"end\""), "{\"kind\":\"mystery\"}\n");
  EXPECT_NE(attempt(unknown).find("unknown kind"), std::string::npos) << errors;

  // Never into a store that holds something.
  run({"import", "--data-dir", dir.str(), "--input", file}, status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(errors.find("not empty"), std::string::npos) << errors;
  EXPECT_EQ(store->head_position(), 4u);
}

// -- rebuild, progress ---------------------------------------------------------------

TEST_F(cli, rebuild_runs_an_application_projection_with_progress_lines) {
  for (int i = 0; i < 3000; ++i)
    ASSERT_TRUE(store->append("account-" + std::to_string(i % 7), expected_version::any(),
                              {event("bank.deposited", 1)}));
  ::setenv("SOURCERY_PROGRESS_EVERY_MS", "0", 1);
  int status = -1;
  auto out = run({"rebuild", "test.totals", "--data-dir", dir.str()}, status, SOURCERY_TEST_TOOL_PATH);
  ASSERT_EQ(status, 0) << errors;
  EXPECT_NE(out.find("rebuilt test.totals up to position 3,004"), std::string::npos) << out;
  // Not a terminal: plain lines with counts, rate and ETA, then the total.
  EXPECT_NE(errors.find("rebuild test.totals: 1,024/3,004 events (34%), "), std::string::npos) << errors;
  EXPECT_NE(errors.find("events/s, ETA "), std::string::npos) << errors;
  EXPECT_NE(errors.find("rebuild test.totals: done, 3,004 events"), std::string::npos) << errors;
  EXPECT_EQ(errors.find('\r'), std::string::npos);

  auto totals = [&] {
    sourcery::persistence::projection_store_options po;
    po.path = dir.str() + "/read-models";
    po.read_only = true;
    auto models = sourcery::testing::checked(sourcery::persistence::projection_store::open(po), "open the read models");
    return sourcery::testing::checked(models->scan("test.totals", "totals"), "scan the totals");
  };
  auto first = totals();
  ASSERT_EQ(first.size(), 7u);
  EXPECT_EQ(first[0], (std::pair<std::string, std::string>{"account-0", "429"}));
  EXPECT_EQ(first[1], (std::pair<std::string, std::string>{"account-1", "434"})) << "5 + 429 deposits";
  EXPECT_EQ(first[2], (std::pair<std::string, std::string>{"account-2", "436"})) << "7 + 429 deposits";

  // Again, as on a terminal: the read model is reset, not added to.
  ::setenv("SOURCERY_PROGRESS", "bar", 1);
  out = run({"rebuild", "test.totals", "--data-dir", dir.str()}, status, SOURCERY_TEST_TOOL_PATH);
  ::unsetenv("SOURCERY_PROGRESS");
  ::unsetenv("SOURCERY_PROGRESS_EVERY_MS");
  ASSERT_EQ(status, 0) << errors;
  EXPECT_NE(errors.find("\r\033[Krebuild test.totals: [##########"), std::string::npos) << errors;
  EXPECT_EQ(totals(), first);

  auto j = json::parse(run({"rebuild", "test.totals", "--data-dir", dir.str(), "--json"}, status, SOURCERY_TEST_TOOL_PATH));
  EXPECT_EQ(status, 0);
  EXPECT_EQ(j["projection"], "test.totals");
  EXPECT_EQ(j["position"], 3004);
  run({"rebuild", "nothing.such", "--data-dir", dir.str()}, status, SOURCERY_TEST_TOOL_PATH);
  EXPECT_EQ(status, 2);
  EXPECT_NE(errors.find("registered:\n  test.totals  deposits per stream"), std::string::npos) << errors;
  run({"rebuild", "test.totals", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 2) << "the generic tool registers no projection";
}

// -- refusals: what must not pass silently ------------------------------------------

TEST_F(cli, reading_a_stream_that_does_not_exist_is_a_failure) {
  int status = -1;
  run({"read", "account-404", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(errors.find("no stream account-404"), std::string::npos) << errors;
  run({"read", "account-1", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 0);
}

TEST_F(cli, a_payload_string_that_is_not_utf8_exports_and_round_trips) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  pk.pack_map(1);
  pk.pack(std::string{"name"});
  pk.pack(std::string{"caf\xe9 \xff"}); // Latin-1, as a C++ program may store it
  event_data e;
  e.type = "bank.renamed";
  e.data = bytes(buf.data(), buf.data() + buf.size());
  e.metadata = e.data;
  ASSERT_TRUE(store->append("account-1", expected_version::any(), {e}));
  int status = -1;
  auto file = dir.str() + ".ndjson";
  run({"export", "--data-dir", dir.str(), "--output", file}, status);
  ASSERT_EQ(status, 0) << errors;
  sourcery::testing::temp_dir other;
  auto copy = (other / "copy").string();
  run({"import", "--data-dir", copy, "--input", file}, status);
  ASSERT_EQ(status, 0) << errors;
  auto again = run({"export", "--data-dir", copy}, status);
  ASSERT_EQ(status, 0) << errors;
  std::ifstream in{file};
  EXPECT_EQ(again, std::string(std::istreambuf_iterator<char>{in}, {}));
  auto restored = lmdb_store::open({.path = copy, .read_only = true});
  ASSERT_TRUE(restored);
  EXPECT_EQ((*restored)->read_all(5, 1)->front().data, e.data) << "the exact bytes";
  run({"read", "account-1", "--data-dir", copy}, status);
  EXPECT_EQ(status, 0);
}

TEST_F(cli, import_refuses_a_repeated_event_id_and_an_edited_payload) {
  int status = -1;
  auto file = dir.str() + ".ndjson";
  run({"export", "--data-dir", dir.str(), "--output", file}, status);
  ASSERT_EQ(status, 0);
  std::ifstream in{file};
  std::vector<std::string> ls;
  for (std::string l; std::getline(in, l);)
    ls.push_back(l);
  sourcery::testing::temp_dir other;
  auto attempt = [&](std::vector<std::string> text) {
    auto bad = (other / "input").string();
    std::ofstream out{bad};
    for (auto& l : text)
      out << l << "\n";
    out.close();
    auto target = (other / "target").string();
    run({"import", "--data-dir", target, "--input", bad}, status);
    EXPECT_EQ(status, 1);
    EXPECT_FALSE(std::filesystem::exists(target));
    return errors;
  };
  auto twice = ls;
  auto second = json::parse(twice[2]);
  second["event_id"] = json::parse(twice[1])["event_id"];
  twice[2] = second.dump();
  EXPECT_NE(attempt(twice).find("used twice"), std::string::npos) << errors;
  auto edited = ls;
  auto first = json::parse(edited[2]);
  first["data"]["amount"] = 1000000;
  edited[2] = first.dump();
  EXPECT_NE(attempt(edited).find("\"data\" does not match"), std::string::npos) << errors;
}

TEST_F(cli, two_imports_into_one_target_never_both_succeed_nor_lose_events) {
  for (int i = 0; i < 3000; ++i)
    ASSERT_TRUE(store->append("account-" + std::to_string(i % 50), expected_version::any(), {event("bank.deposited", i)}));
  int status = -1;
  auto file = dir.str() + ".ndjson";
  run({"export", "--data-dir", dir.str(), "--output", file}, status);
  ASSERT_EQ(status, 0);
  sourcery::testing::temp_dir other;
  auto target = (other / "dual").string();
  for (int round = 0; round < 3; ++round) {
    std::filesystem::remove_all(target);
    child_process a{SOURCERY_CLI_PATH, {"import", "--data-dir", target, "--input", file}, dir.str() + ".a"};
    child_process b{SOURCERY_CLI_PATH, {"import", "--data-dir", target, "--input", file}, dir.str() + ".b"};
    auto out_a = a.read_all(), out_b = b.read_all();
    int sa = a.wait(), sb = b.wait();
    EXPECT_TRUE((sa == 0) != (sb == 0)) << "exactly one import succeeds: " << sa << " " << sb;
    EXPECT_TRUE(sa == 1 || sb == 1);
    auto copy = lmdb_store::open({.path = target, .read_only = true});
    ASSERT_TRUE(copy) << describe(copy.error());
    EXPECT_EQ((*copy)->head_position(), store->head_position()) << "the successful import holds every event";
    auto report = (*copy)->verify();
    ASSERT_TRUE(report);
    EXPECT_TRUE(report->ok());
  }
}

TEST_F(cli, rebuild_refuses_read_models_a_running_application_writes) {
  // Another process holds the read models for writing (as a running server does).
  sourcery::testing::read_model_holder server{dir.str() + "/read-models"};
  ASSERT_TRUE(server.holding());
  int status = -1;
  run({"rebuild", "test.totals", "--data-dir", dir.str()}, status, SOURCERY_TEST_TOOL_PATH);
  server.release();
  EXPECT_EQ(status, 1);
  EXPECT_NE(errors.find("store_in_use"), std::string::npos) << errors;
  run({"rebuild", "test.totals", "--data-dir", dir.str()}, status, SOURCERY_TEST_TOOL_PATH);
  EXPECT_EQ(status, 0) << errors;
}

// -- PostgreSQL: the same commands on a shared store --------------------------------

namespace {

struct cli_postgres : cli {
  std::string uri() const {
    return sourcery::testing::test_pg_uri() + "&schema=" + sourcery::testing::test_schema(dir);
  }
  /// The fixture's LMDB store, exported and imported into PostgreSQL.
  void migrate() {
    int status = -1;
    auto file = dir.str() + ".ndjson";
    run({"export", "--data-dir", dir.str(), "--output", file}, status);
    ASSERT_EQ(status, 0) << errors;
    run({"import", "--store", uri(), "--input", file}, status);
    ASSERT_EQ(status, 0) << errors;
  }
};

TEST_F(cli_postgres, migrates_from_lmdb_and_reads_verifies_and_exports_the_same) {
  ASSERT_TRUE(store->append("odd \xff bytes", expected_version::any(), {event("bank.deposited", 9)}));
  ASSERT_TRUE(store->delete_stream("account-2", expected_version::any()));
  ASSERT_TRUE(store->save_snapshot({"account-1", 2, 3, "account", map_of("balance", 5), 0}));
  ASSERT_TRUE(store->save_checkpoint("handler:mailer", 4));
  int status = -1;
  auto file = dir.str() + ".ndjson";
  run({"export", "--data-dir", dir.str(), "--output", file}, status);
  ASSERT_EQ(status, 0) << errors;
  auto out = run({"import", "--store", uri(), "--input", file}, status);
  ASSERT_EQ(status, 0) << errors;
  EXPECT_NE(out.find("imported 5 events"), std::string::npos) << out;

  // Exporting the PostgreSQL copy gives the same file, byte for byte.
  auto again = run({"export", "--store", uri()}, status);
  ASSERT_EQ(status, 0) << errors;
  std::ifstream in{file};
  std::string first{std::istreambuf_iterator<char>{in}, {}};
  EXPECT_EQ(again, first);

  // The reading commands print what they print for LMDB.
  for (std::vector<std::string> cmd : {std::vector<std::string>{"streams", "--json"}, {"all", "--json"},
                                       {"read", "account-1", "--json"}, {"read", "account-1"}}) {
    auto lmdb = cmd, pg = cmd;
    lmdb.insert(lmdb.end(), {"--data-dir", dir.str()});
    pg.insert(pg.end(), {"--store", uri()});
    auto a = run(lmdb, status);
    ASSERT_EQ(status, 0) << errors;
    auto b = run(pg, status);
    ASSERT_EQ(status, 0) << errors;
    EXPECT_EQ(a, b) << cmd[0];
  }
  out = run({"verify", "--store", uri(), "--json"}, status);
  EXPECT_EQ(status, 0) << out << errors;
  auto report = json::parse(out);
  EXPECT_EQ(report["ok"], true);
  EXPECT_EQ(report["events"], 5);
  auto stats = json::parse(run({"stats", "--store", uri(), "--json"}, status));
  EXPECT_EQ(status, 0) << errors;
  EXPECT_EQ(stats["head_position"], 5);
  EXPECT_EQ(stats["streams"], 3);
  EXPECT_EQ(stats["checkpoints"][0]["name"], "handler:mailer");

  // A second import into a schema holding events is refused.
  run({"import", "--store", uri(), "--input", file}, status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(errors.find("already holds 5 events"), std::string::npos) << errors;
}

TEST_F(cli_postgres, verify_reports_a_hole_in_the_log) {
  ASSERT_NO_FATAL_FAILURE(migrate());
  int status = -1;
  auto schema = sourcery::testing::test_schema(dir);
  // An operator's mistake: an event deleted by hand (the trigger forbids it).
  sourcery::testing::run_sql(sourcery::testing::test_pg_uri(),
                             "ALTER TABLE " + schema + ".events DISABLE TRIGGER no_event_changes; DELETE FROM "
                               + schema + ".events WHERE position = 2");
  auto out = run({"verify", "--store", uri()}, status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(out.find("DAMAGED"), std::string::npos) << out;
  EXPECT_NE(out.find("no event at position 2"), std::string::npos) << out;
}

// A bad URI is a bad argument (status 2, said on one line with a pointer to
// the help); a server that cannot be reached is a store failure (status 1).
TEST_F(cli_postgres, bad_uris_and_unreachable_servers_are_one_line_and_status_1) {
  int status = -1;
  run({"streams", "--store", "mysql://nope"}, status);
  EXPECT_EQ(status, 2);
  EXPECT_NE(errors.substr(0, errors.find('\n')).find("bad store URI"), std::string::npos) << errors;
  auto t0 = std::chrono::steady_clock::now();
  run({"streams", "--store", "postgresql:///x?host=" + dir.str() + "&port=1"}, status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(errors.find("unavailable"), std::string::npos) << errors;
  EXPECT_EQ(std::count(errors.begin(), errors.end(), '\n'), 1) << "libpq's message spans lines; ours does not";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds{10});
  run({"streams", "--store", sourcery::testing::test_pg_uri() + "&user=nobody_here"}, status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(errors.find("authentication_failed"), std::string::npos) << errors;
}

TEST_F(cli_postgres, rebuild_runs_an_application_projection_into_postgres_read_models) {
  ASSERT_NO_FATAL_FAILURE(migrate());
  int status = -1;
  auto out = run({"rebuild", "test.totals", "--store", uri()}, status, SOURCERY_TEST_TOOL_PATH);
  ASSERT_EQ(status, 0) << errors;
  EXPECT_NE(out.find("rebuilt test.totals up to position 4"), std::string::npos) << out;
  sourcery::persistence::postgres_read_model_options opts;
  opts.conninfo = sourcery::testing::test_pg_uri();
  opts.schema = sourcery::testing::test_schema(dir);
  auto models = sourcery::persistence::postgres_projection_store::open(opts);
  ASSERT_TRUE(models);
  auto rows = (*models)->scan("test.totals", "totals");
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0], (std::pair<std::string, std::string>{"account-1", "5"}));
}

TEST_F(cli_postgres, cluster_lists_members_their_shards_and_the_handlers_they_run) {
  int status = -1;
  auto none = run({"cluster", "--store", uri()}, status);
  EXPECT_EQ(status, 0) << errors;
  EXPECT_NE(none.find("no cluster has run"), std::string::npos) << none;
  // What nodes of a cluster write, written here directly.
  sourcery::persistence::coordination_options opts;
  opts.conninfo = sourcery::testing::test_pg_uri();
  opts.schema = sourcery::testing::test_schema(dir);
  opts.setup = sourcery::persistence::schema_setup::create;
  auto c = sourcery::persistence::postgres_coordination::open(opts);
  ASSERT_TRUE(c) << sourcery::persistence::describe(c.error());
  auto a = (*c)->join("bank", "127.0.0.1:4001");
  auto b = (*c)->join("bank", "127.0.0.1:4002");
  ASSERT_TRUE(a && b);
  // Leases are owned by an incarnation of a node.
  auto owner_a = sourcery::persistence::lease_owner("127.0.0.1:4001", *a);
  auto owner_b = sourcery::persistence::lease_owner("127.0.0.1:4002", *b);
  for (int s = 0; s < 3; ++s)
    ASSERT_TRUE((*c)->acquire("bank", "shard:" + std::to_string(s), owner_a, std::chrono::seconds{60}).value());
  ASSERT_TRUE((*c)->acquire("bank", "shard:3", owner_b, std::chrono::seconds{60}).value());
  ASSERT_TRUE((*c)->acquire("bank", "handler:bank.balances", owner_b, std::chrono::seconds{60}).value());
  ASSERT_TRUE((*c)->leave("bank", "127.0.0.1:4001", *a));
  ASSERT_TRUE((*c)->join("todo", "127.0.0.1:5001"));

  auto text = run({"cluster", "--store", uri()}, status);
  ASSERT_EQ(status, 0) << errors;
  EXPECT_NE(text.find("cluster bank"), std::string::npos) << text;
  EXPECT_NE(text.find("cluster todo"), std::string::npos) << text;
  EXPECT_NE(text.find("handler bank.balances"), std::string::npos) << text;
  auto one = lines(run({"cluster", "--store", uri(), "--cluster", "bank", "--json"}, status));
  ASSERT_EQ(status, 0) << errors;
  ASSERT_EQ(one.size(), 1u);
  auto& bank = one[0];
  EXPECT_EQ(bank["cluster"], "bank");
  ASSERT_EQ(bank["members"].size(), 2u);
  EXPECT_EQ(bank["members"][0]["node"], "127.0.0.1:4001");
  EXPECT_EQ(bank["members"][0]["state"], "left");
  EXPECT_EQ(bank["members"][0]["shards"], 3);
  EXPECT_EQ(bank["members"][1]["state"], "up");
  EXPECT_EQ(bank["members"][1]["shards"], 1);
  ASSERT_EQ(bank["handlers"].size(), 1u);
  EXPECT_EQ(bank["handlers"][0]["handler"], "bank.balances");
  EXPECT_EQ(bank["handlers"][0]["node"], "127.0.0.1:4002");
  EXPECT_EQ(bank["handlers"][0]["epoch"], 1);
  // A cluster lives in PostgreSQL: an LMDB store has none to show.
  run({"cluster", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 2);
  EXPECT_NE(errors.find("PostgreSQL"), std::string::npos) << errors;
}

} // namespace

// `all` finds things: by type, category (stream prefix), correlation and
// causation, newest first; text lines show event ids.
TEST_F(cli, all_filters_by_type_category_correlation_and_causation_and_reads_backward) {
  event_data tagged = event("shop.ordered", 3);
  tagged.correlation_id = "corr-9";
  tagged.causation_id = "cause-9";
  ASSERT_TRUE(store->append("order-1", expected_version::any(), {tagged}));
  ASSERT_TRUE(store->append("accounting-1", expected_version::any(), {event("bank.deposited", 2)}));
  int status = -1;
  auto positions = [&](const std::string& out) {
    std::vector<uint64_t> v;
    for (auto& j : lines(out))
      v.push_back(j["position"].get<uint64_t>());
    return v;
  };
  EXPECT_EQ(positions(run({"all", "--data-dir", dir.str(), "--json", "--type", "bank.deposited"}, status)),
            (std::vector<uint64_t>{2, 3, 6}));
  EXPECT_EQ(positions(run({"all", "--data-dir", dir.str(), "--json", "--category", "account"}, status)),
            (std::vector<uint64_t>{1, 2, 3, 4})) << "account-... only, not accounting-...";
  EXPECT_EQ(positions(run({"all", "--data-dir", dir.str(), "--json", "--correlation", "corr-9"}, status)),
            (std::vector<uint64_t>{5}));
  EXPECT_EQ(positions(run({"all", "--data-dir", dir.str(), "--json", "--causation", "cmd-7"}, status)),
            (std::vector<uint64_t>{3}));
  EXPECT_EQ(positions(run({"all", "--data-dir", dir.str(), "--json", "--backward", "--limit", "2"}, status)),
            (std::vector<uint64_t>{6, 5}));
  EXPECT_EQ(positions(run({"all", "--data-dir", dir.str(), "--json", "--backward", "--from", "3", "--type",
                           "bank.deposited"}, status)),
            (std::vector<uint64_t>{3, 2}));
  auto text = run({"all", "--data-dir", dir.str(), "--limit", "1"}, status);
  auto first = store->read_all(1, 1);
  ASSERT_TRUE(first);
  EXPECT_NE(text.find("id " + first->front().event_id.to_string()), std::string::npos) << text;
}

// `trace` prints what one event caused, across streams: the events whose
// causation is it, or an event caused by it.
TEST_F(cli, trace_prints_the_tree_of_what_an_event_caused) {
  auto root = store->read_all(1, 1);
  ASSERT_TRUE(root);
  auto root_id = root->front().event_id.to_string();
  event_data child = event("saga.step", 1);
  child.causation_id = root_id;
  ASSERT_TRUE(store->append("saga-1", expected_version::any(), {child}));
  auto child_id = store->read_all(5, 1)->front().event_id.to_string();
  event_data grandchild = event("saga.done", 2);
  grandchild.causation_id = child_id;
  ASSERT_TRUE(store->append("other-1", expected_version::any(), {grandchild, event("unrelated", 3)}));
  int status = -1;
  auto j = json::parse(run({"trace", root_id, "--data-dir", dir.str(), "--json"}, status));
  ASSERT_EQ(status, 0) << errors;
  EXPECT_EQ(j["position"], 1);
  ASSERT_EQ(j["caused"].size(), 1u);
  EXPECT_EQ(j["caused"][0]["stream"], "saga-1");
  ASSERT_EQ(j["caused"][0]["caused"].size(), 1u);
  EXPECT_EQ(j["caused"][0]["caused"][0]["type"], "saga.done");
  auto text = run({"trace", root_id, "--data-dir", dir.str()}, status);
  EXPECT_NE(text.find("3 events in the tree"), std::string::npos) << text;
  run({"trace", "not-a-uuid", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 2);
  run({"trace", "00000000-0000-4000-8000-000000000000", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 1);
}

// init creates a store explicitly (nothing else does), delete soft-deletes
// a stream through the store's API, drop removes a store -- only with --yes.
TEST_F(cli, init_delete_and_drop_manage_a_store) {
  int status = -1;
  auto fresh = dir.str() + "-fresh";
  run({"streams", "--data-dir", fresh}, status);
  EXPECT_EQ(status, 2) << "no store there, and none created";
  EXPECT_FALSE(std::filesystem::exists(fresh));
  auto out = run({"init", "--data-dir", fresh}, status);
  EXPECT_EQ(status, 0) << errors;
  EXPECT_NE(out.find("created a Sourcery store"), std::string::npos) << out;
  out = run({"init", "--data-dir", fresh}, status);
  EXPECT_EQ(status, 0) << errors;
  EXPECT_NE(out.find("already holds a Sourcery store"), std::string::npos) << out;

  store.reset(); // the tool writes: the fixture lets go of the store
  run({"delete", "account-1", "--data-dir", dir.str(), "--expected-version", "1"}, status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(errors.find("wrong_expected_version"), std::string::npos) << errors;
  run({"delete", "account-1", "--data-dir", dir.str(), "--expected-version", "3"}, status);
  EXPECT_EQ(status, 0) << errors;
  auto s = lmdb_store::open({.path = dir.str()});
  ASSERT_TRUE(s);
  auto info = (*s)->stream_info("account-1");
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->deleted);
  s->reset();
  run({"delete", "nobody", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 1);

  run({"drop", "--data-dir", fresh}, status);
  EXPECT_EQ(status, 2) << "not without --yes";
  EXPECT_TRUE(std::filesystem::exists(fresh + "/data.mdb"));
  run({"drop", "--data-dir", fresh, "--yes"}, status);
  EXPECT_EQ(status, 0) << errors;
  EXPECT_FALSE(std::filesystem::exists(fresh));
}

TEST_F(cli_postgres, init_and_drop_a_schema_and_drop_refuses_one_in_use) {
  int status = -1;
  run({"stats", "--store", uri()}, status);
  EXPECT_EQ(status, 2);
  run({"init", "--store", uri()}, status);
  ASSERT_EQ(status, 0) << errors;
  run({"stats", "--store", uri()}, status);
  EXPECT_EQ(status, 0) << errors;
  {
    // An application's store open on it: drop refuses.
    auto opts = sourcery::testing::test_pg_options(dir);
    auto app = sourcery::testing::open_test_pg(opts);
    run({"drop", "--store", uri(), "--yes"}, status);
    EXPECT_EQ(status, 1);
    EXPECT_NE(errors.find("store_in_use"), std::string::npos) << errors;
  }
  run({"drop", "--store", uri(), "--yes"}, status);
  EXPECT_EQ(status, 0) << errors;
  run({"stats", "--store", uri()}, status);
  EXPECT_EQ(status, 2) << "dropped";
}

// On LMDB the store has one writer: while an application holds it, reset
// is refused with what to do; stopped, the tool moves the checkpoint itself.
TEST_F(cli, handlers_lists_and_reset_moves_a_handler_of_a_stopped_application) {
  ASSERT_TRUE(store->save_checkpoint("handler:mailer", 3));
  ASSERT_TRUE(store->save_checkpoint("status.stopped:mailer", 3 + 1)); // stopped on #3
  int status = -1;
  auto j = json::parse(run({"handlers", "--data-dir", dir.str(), "--json"}, status));
  ASSERT_EQ(status, 0) << errors;
  EXPECT_EQ(j["name"], "mailer");
  EXPECT_EQ(j["kind"], "handler");
  EXPECT_EQ(j["state"], "stopped");
  EXPECT_EQ(j["stopped_at"]["position"], 3);
  EXPECT_EQ(j["stopped_at"]["type"], "bank.deposited");
  EXPECT_EQ(j["lag"], 1) << "the head is #4";
  auto stats = run({"stats", "--data-dir", dir.str()}, status);
  EXPECT_EQ(stats.find("status.stopped"), std::string::npos) << "records are not subscriptions: " << stats;

  run({"reset", "mailer", "--to", "1", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 1) << "the fixture holds the store as an application would";
  EXPECT_NE(errors.find("one writer"), std::string::npos) << errors;
  store.reset();
  auto out = run({"reset", "mailer", "--to", "start", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 0) << errors;
  out = run({"skip", "mailer", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 0) << errors;
  EXPECT_NE(out.find("parked"), std::string::npos) << out;
  j = json::parse(run({"handlers", "--data-dir", dir.str(), "--json"}, status));
  EXPECT_EQ(j["position"], 3) << "skipped: it goes on after #3";
  EXPECT_EQ(j["parked"], json::array({3}));
  EXPECT_NE(j["state"], "stopped");
  run({"reset", "mailer", "--to", "99", "--data-dir", dir.str()}, status);
  EXPECT_EQ(status, 2) << "past the head";
}
