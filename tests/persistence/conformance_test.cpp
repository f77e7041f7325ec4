// The event-store contract, run against every implementation.

#include <atomic>
#include <future>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/memory_store.hpp"
#include "../support/postgres.hpp"
#include "store_factory.hpp"
#include "test_events.hpp"

using namespace sourcery::persistence;
using namespace sourcery::testing;
using namespace std::chrono_literals;

namespace {

std::vector<store_factory> factories() {
  return {
    {"memory", false, [](const temp_dir&) -> std::unique_ptr<event_store> { return std::make_unique<memory_store>(); }},
    {"lmdb", true,
     [](const temp_dir& dir) -> std::unique_ptr<event_store> {
       lmdb_options opts;
       opts.path = (dir / "store").string();
       opts.initial_map_size = size_t{8} << 20;
       auto s = lmdb_store::open(opts);
       if (!s)
         throw std::runtime_error(describe(s.error()));
       return std::move(*s);
     }},
    {"postgres", true,
     [](const temp_dir& dir) -> std::unique_ptr<event_store> { return open_test_pg(test_pg_options(dir)); }},
  };
}

class conformance : public ::testing::TestWithParam<store_factory> {
protected:
  void SetUp() override { store_ = GetParam().open(dir_); }
  void reopen() {
    store_.reset();
    store_ = GetParam().open(dir_);
  }
  event_store& store() { return *store_; }

  std::vector<recorded_event> all_events() {
    std::vector<recorded_event> out;
    uint64_t from = 1;
    for (;;) {
      auto batch = store_->read_all(from, 100);
      EXPECT_TRUE(batch) << describe(batch.error());
      if (!batch || batch->empty())
        return out;
      from = batch->back().position + 1;
      for (auto& ev : *batch)
        out.push_back(std::move(ev));
    }
  }

  temp_dir dir_;
  std::unique_ptr<event_store> store_;
};

#define ASSERT_OK(expr)                                                                            \
  do {                                                                                             \
    auto&& r_ = (expr);                                                                            \
    ASSERT_TRUE(r_) << describe(r_.error());                                                       \
  } while (false)

// -- appending ------------------------------------------------------------------

TEST_P(conformance, append_assigns_versions_and_positions) {
  auto r = store().append("account-1", expected_version::no_stream(), make_events(1, 3));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->stream_version, 3u);
  EXPECT_EQ(r->first_position, 1u);
  EXPECT_EQ(r->last_position, 3u);
  auto r2 = store().append("account-2", expected_version::any(), make_events(4, 2));
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->stream_version, 2u);
  EXPECT_EQ(r2->first_position, 4u);
  EXPECT_EQ(r2->last_position, 5u);
  EXPECT_EQ(store().head_position(), 5u);
  auto events = store().read_stream("account-1", 1, 10);
  ASSERT_TRUE(events);
  ASSERT_EQ(events->size(), 3u);
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*events)[i].stream_version, i + 1);
    EXPECT_EQ((*events)[i].position, i + 1);
    EXPECT_EQ((*events)[i].stream_id, "account-1");
    EXPECT_EQ(payload_n((*events)[i]), static_cast<int64_t>(i + 1));
  }
}

TEST_P(conformance, recorded_events_carry_every_field) {
  event_data ev = make_event(7, "bank.deposited");
  ev.schema_version = 3;
  ev.metadata = map_payload(99, "meta");
  ev.causation_id = "cmd-1";
  ev.correlation_id = "corr-1";
  auto id = uuid::random();
  ev.event_id = id;
  auto before = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::system_clock::now().time_since_epoch()).count();
  ASSERT_OK(store().append("s", expected_version::any(), {ev, make_event(8)}));
  auto events = store().read_stream("s", 1, 10);
  ASSERT_TRUE(events);
  ASSERT_EQ(events->size(), 2u);
  const auto& rec = (*events)[0];
  EXPECT_EQ(rec.event_id, id);
  EXPECT_EQ(rec.type, "bank.deposited");
  EXPECT_EQ(rec.schema_version, 3u);
  EXPECT_EQ(rec.data, ev.data);
  EXPECT_EQ(rec.metadata, ev.metadata);
  EXPECT_EQ(rec.causation_id, "cmd-1");
  EXPECT_EQ(rec.correlation_id, "corr-1");
  EXPECT_GE(rec.created_at, before);
  // A nil id is replaced by a fresh one, unique per event.
  EXPECT_FALSE((*events)[1].event_id.is_nil());
  EXPECT_NE((*events)[1].event_id, id);
  EXPECT_EQ((*events)[1].event_id.bytes[6] >> 4, 4); // version 4 uuid
}

struct version_case {
  const char* stream_state; // "absent" or "at2"
  expected_version expected;
  bool ok;
};

TEST_P(conformance, every_expected_version_case) {
  const std::vector<version_case> cases = {
    {"absent", expected_version::any(), true},
    {"absent", expected_version::no_stream(), true},
    {"absent", expected_version::stream_exists(), false},
    {"absent", expected_version::exact(0), true},
    {"absent", expected_version::exact(1), false},
    {"at2", expected_version::any(), true},
    {"at2", expected_version::no_stream(), false},
    {"at2", expected_version::stream_exists(), true},
    {"at2", expected_version::exact(2), true},
    {"at2", expected_version::exact(1), false},
    {"at2", expected_version::exact(3), false},
    {"at2", expected_version::exact(0), false},
  };
  int n = 0;
  for (const auto& c : cases) {
    std::string stream = "case-" + std::to_string(n++);
    uint64_t version = 0;
    if (std::string{c.stream_state} == "at2") {
      ASSERT_OK(store().append(stream, expected_version::no_stream(), make_events(1, 2)));
      version = 2;
    }
    auto head = store().head_position();
    auto r = store().append(stream, c.expected, make_events(10, 1));
    SCOPED_TRACE(stream + " " + c.stream_state + " expecting " + c.expected.to_string());
    if (c.ok) {
      ASSERT_TRUE(r) << describe(r.error());
      EXPECT_EQ(r->stream_version, version + 1);
      EXPECT_EQ(store().head_position(), head + 1);
    } else {
      ASSERT_FALSE(r);
      EXPECT_EQ(code_of(r.error()), store_errc::wrong_expected_version);
      EXPECT_NE(describe(r.error()).find(stream), std::string::npos);
      EXPECT_EQ(store().head_position(), head);
      auto info = store().stream_info(stream);
      ASSERT_TRUE(info);
      EXPECT_EQ(info->version, version);
    }
  }
}

TEST_P(conformance, append_is_all_or_nothing) {
  auto events = make_events(1, 3);
  events[1].data = {0xc1}; // never-used msgpack byte
  auto r = store().append("s", expected_version::any(), events);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::malformed_payload);
  events[1].data = map_payload(2);
  events[2].metadata = {0x92, 0x01, 0x02}; // an array, not a map
  r = store().append("s", expected_version::any(), events);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::malformed_payload);
  EXPECT_EQ(store().head_position(), 0u);
  auto info = store().stream_info("s");
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->exists);
}

TEST_P(conformance, rejects_bad_arguments_with_typed_errors) {
  EXPECT_EQ(code_of(store().append("", expected_version::any(), make_events(1, 1)).error()),
            store_errc::invalid_argument);
  EXPECT_EQ(code_of(store().append("$all", expected_version::any(), make_events(1, 1)).error()),
            store_errc::invalid_argument);
  EXPECT_EQ(code_of(store().append(std::string(401, 'x'), expected_version::any(), make_events(1, 1)).error()),
            store_errc::invalid_argument);
  auto ev = make_event(1);
  ev.type.clear();
  EXPECT_EQ(code_of(store().append("s", expected_version::any(), {ev}).error()), store_errc::invalid_argument);
  ev = make_event(1);
  ev.data = map_payload(1);
  ev.data.push_back(0x01); // trailing bytes
  EXPECT_EQ(code_of(store().append("s", expected_version::any(), {ev}).error()), store_errc::malformed_payload);
  ev.data = {0xdf, 0xff, 0xff, 0xff, 0xff}; // map32 claiming 4 billion entries, truncated
  EXPECT_EQ(code_of(store().append("s", expected_version::any(), {ev}).error()), store_errc::malformed_payload);
  EXPECT_EQ(code_of(store().read_stream("", 1, 1).error()), store_errc::invalid_argument);
  EXPECT_EQ(store().head_position(), 0u);
}

TEST_P(conformance, empty_append_checks_the_version_and_writes_nothing) {
  auto r = store().append("s", expected_version::no_stream(), {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->stream_version, 0u);
  EXPECT_EQ(r->first_position, 0u);
  ASSERT_OK(store().append("s", expected_version::no_stream(), make_events(1, 1)));
  r = store().append("s", expected_version::no_stream(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::wrong_expected_version);
}

TEST_P(conformance, append_async_answers_once) {
  std::promise<caf::expected<append_result>> p;
  store().append_async("s", expected_version::no_stream(), make_events(1, 2),
                       [&](caf::expected<append_result> r) { p.set_value(std::move(r)); });
  auto r = p.get_future().get();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->stream_version, 2u);
}

// -- reading ------------------------------------------------------------------

TEST_P(conformance, visits_streams_and_all_in_order_across_batches) {
  // Interleaved streams, longer than one internal batch (256).
  for (int round = 0; round < 3; ++round) {
    ASSERT_OK(store().append("a", expected_version::any(), make_events(round * 1000 + 1, 200)));
    ASSERT_OK(store().append("b", expected_version::any(), make_events(round * 1000 + 500, 10)));
  }
  std::vector<uint64_t> versions;
  std::vector<int64_t> payloads;
  ASSERT_FALSE(store().for_each_in_stream("a", 5, [&](const recorded_event& ev) {
    versions.push_back(ev.stream_version);
    payloads.push_back(payload_n(ev));
    EXPECT_EQ(ev.stream_id, "a");
    return true;
  }));
  ASSERT_EQ(versions.size(), 596u);
  for (size_t i = 0; i < versions.size(); ++i)
    EXPECT_EQ(versions[i], 5 + i);
  EXPECT_EQ(payloads.front(), 5);
  EXPECT_EQ(payloads.back(), 2200);

  size_t seen = 0;
  ASSERT_FALSE(store().for_each_in_stream("a", 1, [&](const recorded_event&) { return ++seen < 300; }));
  EXPECT_EQ(seen, 300u) << "returning false stops the visit";

  std::vector<uint64_t> positions;
  ASSERT_FALSE(store().for_each_in_all(100, [&](const recorded_event& ev) {
    positions.push_back(ev.position);
    return true;
  }));
  ASSERT_EQ(positions.size(), 630u - 99u);
  for (size_t i = 0; i < positions.size(); ++i)
    EXPECT_EQ(positions[i], 100 + i);

  seen = 0;
  ASSERT_FALSE(store().for_each_in_stream("nobody", 1, [&](const recorded_event&) { return ++seen, true; }));
  EXPECT_EQ(seen, 0u);
  ASSERT_OK(store().delete_stream("b", expected_version::any()));
  auto err = store().for_each_in_stream("b", 1, [](const recorded_event&) { return true; });
  EXPECT_EQ(code_of(err), store_errc::stream_deleted);
}

TEST_P(conformance, reads_streams_forward_and_backward) {
  ASSERT_OK(store().append("a", expected_version::any(), make_events(1, 10)));
  ASSERT_OK(store().append("b", expected_version::any(), make_events(100, 5)));
  ASSERT_OK(store().append("a", expected_version::exact(10), make_events(11, 5)));
  auto fwd = store().read_stream("a", 4, 5);
  ASSERT_TRUE(fwd);
  ASSERT_EQ(fwd->size(), 5u);
  for (size_t i = 0; i < 5; ++i)
    EXPECT_EQ((*fwd)[i].stream_version, 4 + i);
  EXPECT_EQ((*fwd)[0].position, 4u);
  auto tail = store().read_stream("a", 12, 100);
  ASSERT_TRUE(tail);
  ASSERT_EQ(tail->size(), 4u);
  EXPECT_EQ(tail->back().stream_version, 15u);
  EXPECT_EQ(tail->back().position, 20u);
  auto bwd = store().read_stream("a", UINT64_MAX, 3, read_direction::backward);
  ASSERT_TRUE(bwd);
  ASSERT_EQ(bwd->size(), 3u);
  EXPECT_EQ((*bwd)[0].stream_version, 15u);
  EXPECT_EQ((*bwd)[2].stream_version, 13u);
  auto bwd2 = store().read_stream("a", 2, 10, read_direction::backward);
  ASSERT_TRUE(bwd2);
  ASSERT_EQ(bwd2->size(), 2u);
  EXPECT_EQ((*bwd2)[1].stream_version, 1u);
  auto past = store().read_stream("a", 16, 10);
  ASSERT_TRUE(past);
  EXPECT_TRUE(past->empty());
  auto none = store().read_stream("nobody", 1, 10);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
}

TEST_P(conformance, reads_all_in_batches_both_ways) {
  for (int i = 0; i < 10; ++i)
    ASSERT_OK(store().append("s" + std::to_string(i % 3), expected_version::any(), make_events(i * 10, 7)));
  auto all = all_events();
  ASSERT_EQ(all.size(), 70u);
  for (size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(all[i].position, i + 1);
  auto bwd = store().read_all(UINT64_MAX, 10, read_direction::backward);
  ASSERT_TRUE(bwd);
  ASSERT_EQ(bwd->size(), 10u);
  EXPECT_EQ(bwd->front().position, 70u);
  EXPECT_EQ(bwd->back().position, 61u);
  auto mid = store().read_all(5, 3, read_direction::backward);
  ASSERT_TRUE(mid);
  ASSERT_EQ(mid->size(), 3u);
  EXPECT_EQ(mid->front().position, 5u);
  EXPECT_EQ(mid->back().position, 3u);
  auto end = store().read_all(71, 10);
  ASSERT_TRUE(end);
  EXPECT_TRUE(end->empty());
  auto zero = store().read_all(0, 2, read_direction::backward);
  ASSERT_TRUE(zero);
  EXPECT_TRUE(zero->empty());
}

TEST_P(conformance, stream_info_reports_version_and_times) {
  auto info = store().stream_info("s");
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->exists);
  EXPECT_EQ(info->version, 0u);
  ASSERT_OK(store().append("s", expected_version::any(), make_events(1, 4)));
  info = store().stream_info("s");
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->exists);
  EXPECT_FALSE(info->deleted);
  EXPECT_EQ(info->version, 4u);
  EXPECT_GT(info->created_at, 0);
  EXPECT_GE(info->updated_at, info->created_at);
}

// -- soft delete --------------------------------------------------------------

TEST_P(conformance, soft_delete_keeps_events_in_all) {
  ASSERT_OK(store().append("doomed", expected_version::any(), make_events(1, 3)));
  ASSERT_OK(store().append("other", expected_version::any(), make_events(1, 1)));
  auto wrong = store().delete_stream("doomed", expected_version::exact(2));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(code_of(wrong.error()), store_errc::wrong_expected_version);
  ASSERT_OK(store().delete_stream("doomed", expected_version::exact(3)));
  auto append = store().append("doomed", expected_version::any(), make_events(4, 1));
  ASSERT_FALSE(append);
  EXPECT_EQ(code_of(append.error()), store_errc::stream_deleted);
  auto read = store().read_stream("doomed", 1, 10);
  ASSERT_FALSE(read);
  EXPECT_EQ(code_of(read.error()), store_errc::stream_deleted);
  auto again = store().delete_stream("doomed", expected_version::any());
  EXPECT_EQ(code_of(again.error()), store_errc::stream_deleted);
  auto info = store().stream_info("doomed");
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->deleted);
  EXPECT_EQ(all_events().size(), 4u);
  ASSERT_OK(store().append("other", expected_version::exact(1), make_events(2, 1)));
}

// -- snapshots and checkpoints ------------------------------------------------

TEST_P(conformance, snapshots_save_load_replace_delete) {
  auto none = store().load_snapshot("acc");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  snapshot snap{"acc", 10, 2, "bank.account", map_payload(500), 0};
  ASSERT_OK(store().save_snapshot(snap));
  auto got = store().load_snapshot("acc");
  ASSERT_TRUE(got);
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->stream_version, 10u);
  EXPECT_EQ((*got)->snapshot_version, 2u);
  EXPECT_EQ((*got)->type, "bank.account");
  EXPECT_EQ((*got)->data, snap.data);
  EXPECT_GT((*got)->created_at, 0);
  snap.stream_version = 20;
  snap.snapshot_version = 3;
  ASSERT_OK(store().save_snapshot(snap));
  got = store().load_snapshot("acc");
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->stream_version, 20u);
  EXPECT_EQ((*got)->snapshot_version, 3u);
  ASSERT_OK(store().delete_snapshot("acc"));
  got = store().load_snapshot("acc");
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->has_value());
}

TEST_P(conformance, checkpoints_survive_reopen) {
  auto none = store().load_checkpoint("projector");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  ASSERT_OK(store().save_checkpoint("projector", 42));
  ASSERT_OK(store().save_checkpoint("projector", 43));
  auto cp = store().load_checkpoint("projector");
  ASSERT_TRUE(cp && cp->has_value());
  EXPECT_EQ(**cp, 43u);
  if (!GetParam().persistent)
    return;
  ASSERT_OK(store().append("s", expected_version::any(), make_events(1, 2)));
  ASSERT_OK(store().save_snapshot(snapshot{"s", 2, 1, "t", map_payload(1), 0}));
  reopen();
  cp = store().load_checkpoint("projector");
  ASSERT_TRUE(cp && cp->has_value());
  EXPECT_EQ(**cp, 43u);
  EXPECT_EQ(store().head_position(), 2u);
  auto snap = store().load_snapshot("s");
  ASSERT_TRUE(snap && snap->has_value());
  EXPECT_EQ((*snap)->stream_version, 2u);
  auto r = store().append("s", expected_version::exact(2), make_events(3, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->last_position, 3u);
}

// -- concurrency --------------------------------------------------------------

TEST_P(conformance, concurrent_appenders_on_one_stream_win_each_version_once) {
  constexpr int writers = 8;
  constexpr int attempts = 60;
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  std::mutex mtx;
  std::map<uint64_t, int> winner_of_version;
  for (int w = 0; w < writers; ++w)
    threads.emplace_back([&, w] {
      for (int i = 0; i < attempts; ++i) {
        auto info = store().stream_info("contended");
        ASSERT_TRUE(info);
        auto r = store().append("contended", expected_version::exact(info->version),
                                {make_event(w * 1000 + i)});
        if (r) {
          wins++;
          std::lock_guard guard{mtx};
          EXPECT_TRUE(winner_of_version.emplace(r->stream_version, w).second);
        } else {
          EXPECT_EQ(code_of(r.error()), store_errc::wrong_expected_version) << describe(r.error());
        }
      }
    });
  for (auto& t : threads)
    t.join();
  auto info = store().stream_info("contended");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->version, static_cast<uint64_t>(wins.load()));
  EXPECT_EQ(winner_of_version.size(), static_cast<size_t>(wins.load()));
  auto events = store().read_stream("contended", 1, 100000);
  ASSERT_TRUE(events);
  std::set<int64_t> seen;
  for (size_t i = 0; i < events->size(); ++i) {
    EXPECT_EQ((*events)[i].stream_version, i + 1);
    EXPECT_TRUE(seen.insert(payload_n((*events)[i])).second);
  }
}

TEST_P(conformance, many_streams_at_once_keep_all_gapless_and_ordered) {
  constexpr int writers = 16;
  constexpr int streams_per_writer = 8;
  constexpr int appends = 40;
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w)
    threads.emplace_back([&, w] {
      std::vector<uint64_t> versions(streams_per_writer, 0);
      for (int i = 0; i < appends; ++i) {
        int s = i % streams_per_writer;
        size_t n = 1 + (i % 3);
        auto r = store().append("w" + std::to_string(w) + "-" + std::to_string(s),
                                expected_version::exact(versions[s]), make_events(i, n));
        ASSERT_TRUE(r) << describe(r.error());
        versions[s] += n;
        EXPECT_EQ(r->stream_version, versions[s]);
        EXPECT_EQ(r->last_position - r->first_position + 1, n);
      }
    });
  for (auto& t : threads)
    t.join();
  auto all = all_events();
  std::map<std::string, uint64_t> last_version;
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].position, i + 1);
    auto& v = last_version[all[i].stream_id];
    EXPECT_EQ(all[i].stream_version, v + 1) << all[i].stream_id;
    v = all[i].stream_version;
  }
  EXPECT_EQ(last_version.size(), static_cast<size_t>(writers * streams_per_writer));
  EXPECT_EQ(store().head_position(), all.size());
}

// -- subscriptions ------------------------------------------------------------

struct collector {
  std::mutex mtx;
  std::vector<recorded_event> events;
  batch_handler handler() {
    return [this](const std::vector<recorded_event>& batch) -> caf::expected<void> {
      std::lock_guard guard{mtx};
      events.insert(events.end(), batch.begin(), batch.end());
      return {};
    };
  }
  std::vector<uint64_t> positions() {
    std::lock_guard guard{mtx};
    std::vector<uint64_t> out;
    for (auto& ev : events)
      out.push_back(ev.position);
    return out;
  }
};

std::vector<uint64_t> range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (auto p = first; p <= last; ++p)
    out.push_back(p);
  return out;
}

TEST_P(conformance, transient_subscription_sees_only_new_events) {
  ASSERT_OK(store().append("s", expected_version::any(), make_events(1, 5)));
  collector seen;
  auto sub = store().subscribe({}, seen.handler());
  ASSERT_TRUE(sub) << describe(sub.error());
  ASSERT_OK(store().append("s", expected_version::any(), make_events(6, 3)));
  ASSERT_OK(store().append("t", expected_version::any(), make_events(9, 2)));
  ASSERT_TRUE(sub->wait_for(10, 5s));
  EXPECT_EQ(seen.positions(), range(6, 10));
  sub->stop();
  EXPECT_FALSE(sub->active());
}

TEST_P(conformance, persistent_subscription_catches_up_then_goes_live_then_resumes) {
  for (int i = 0; i < 30; ++i)
    ASSERT_OK(store().append("s" + std::to_string(i % 4), expected_version::any(), make_events(i, 10)));
  collector seen;
  subscription_options opts;
  opts.name = "projector";
  opts.batch_size = 64;
  {
    auto sub = store().subscribe(opts, seen.handler());
    ASSERT_TRUE(sub) << describe(sub.error());
    // While it runs, a second subscriber of the same name is refused.
    auto dup = store().subscribe(opts, seen.handler());
    ASSERT_FALSE(dup);
    EXPECT_EQ(code_of(dup.error()), store_errc::subscription_exists);
    ASSERT_TRUE(sub->wait_for(300, 5s));
    ASSERT_OK(store().append("live", expected_version::any(), make_events(1, 5)));
    ASSERT_TRUE(sub->wait_for(305, 5s));
    EXPECT_EQ(seen.positions(), range(1, 305));
  }
  auto cp = store().load_checkpoint("projector");
  ASSERT_TRUE(cp && cp->has_value());
  EXPECT_EQ(**cp, 305u);
  ASSERT_OK(store().append("live", expected_version::any(), make_events(6, 5)));
  if (GetParam().persistent)
    reopen();
  collector resumed;
  auto sub = store().subscribe(opts, resumed.handler());
  ASSERT_TRUE(sub);
  ASSERT_TRUE(sub->wait_for(310, 5s));
  EXPECT_EQ(resumed.positions(), range(306, 310));
}

TEST_P(conformance, subscription_start_and_stream_filter) {
  ASSERT_OK(store().append("a", expected_version::any(), make_events(1, 4)));
  ASSERT_OK(store().append("b", expected_version::any(), make_events(1, 4)));
  collector from_current, from_pos, only_b;
  subscription_options cur;
  cur.name = "cur";
  cur.start = subscription_start::current;
  subscription_options pos;
  pos.name = "pos";
  pos.start = subscription_start::position;
  pos.start_position = 6;
  subscription_options filt;
  filt.name = "filt";
  filt.stream = "b";
  auto s1 = store().subscribe(cur, from_current.handler());
  auto s2 = store().subscribe(pos, from_pos.handler());
  auto s3 = store().subscribe(filt, only_b.handler());
  ASSERT_TRUE(s1 && s2 && s3);
  ASSERT_OK(store().append("b", expected_version::any(), make_events(5, 1)));
  for (auto* s : {&*s1, &*s2, &*s3})
    ASSERT_TRUE(s->wait_for(9, 5s));
  EXPECT_EQ(from_current.positions(), range(9, 9));
  EXPECT_EQ(from_pos.positions(), range(7, 9));
  EXPECT_EQ(only_b.positions(), range(5, 9));
}

TEST_P(conformance, failing_handler_stops_and_batch_is_redelivered) {
  ASSERT_OK(store().append("s", expected_version::any(), make_events(1, 10)));
  subscription_options opts;
  opts.name = "fragile";
  opts.batch_size = 4;
  std::atomic<int> calls{0};
  auto sub = store().subscribe(opts, [&](const std::vector<recorded_event>& batch) -> caf::expected<void> {
    if (++calls == 2)
      return make_error(store_errc::handler_failed, "poison at " + std::to_string(batch.front().position));
    return {};
  });
  ASSERT_TRUE(sub);
  EXPECT_FALSE(sub->wait_for(10, 2s));
  EXPECT_FALSE(sub->active());
  EXPECT_EQ(code_of(sub->failure()), store_errc::handler_failed);
  EXPECT_EQ(sub->position(), 4u);
  sub->stop();
  collector again;
  auto resumed = store().subscribe(opts, again.handler());
  ASSERT_TRUE(resumed);
  ASSERT_TRUE(resumed->wait_for(10, 5s));
  EXPECT_EQ(again.positions(), range(5, 10));
}

// -- event types ----------------------------------------------------------------

TEST_P(conformance, reads_upcast_old_schema_versions) {
  event_registry v1;
  ASSERT_FALSE(v1.add<deposited>("bank.deposited", 1));
  auto old = v1.encode(deposited{"acc-1", 50, ""});
  ASSERT_TRUE(old);
  ASSERT_OK(store().append("acc-1", expected_version::any(), {*old}));

  event_registry v2;
  ASSERT_FALSE(v2.add<deposited>("bank.deposited", 2));
  ASSERT_FALSE(v2.add_upcaster("bank.deposited", 1, [](nlohmann::json& d) { d["currency"] = "EUR"; }));
  store().use_registry(&v2);
  auto events = store().read_stream("acc-1", 1, 10);
  ASSERT_TRUE(events);
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].schema_version, 2u);
  auto ev = v2.decode<deposited>((*events)[0]);
  ASSERT_TRUE(ev) << describe(ev.error());
  EXPECT_EQ(*ev, (deposited{"acc-1", 50, "EUR"}));
  // An unknown type reads as a raw record.
  ASSERT_OK(store().append("acc-1", expected_version::any(), {make_event(1, "some.future.type")}));
  auto all = store().read_all(1, 10);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].type, "some.future.type");
  EXPECT_FALSE(v2.knows((*all)[1].type));
  EXPECT_EQ(code_of(v2.decode<deposited>((*all)[1]).error()), store_errc::type_mismatch);
  store().use_registry(nullptr);
}

// -- listing --------------------------------------------------------------------

TEST_P(conformance, lists_streams_snapshots_and_checkpoints_in_key_order) {
  // More streams than one listing batch (256), appended out of key order.
  for (int i = 299; i >= 0; --i) {
    char id[16];
    std::snprintf(id, sizeof id, "s-%03d", i);
    ASSERT_OK(store().append(id, expected_version::no_stream(), make_events(i, 1 + i % 3)));
  }
  ASSERT_OK(store().delete_stream("s-007", expected_version::any()));
  ASSERT_OK(store().delete_stream("never-written", expected_version::any()));
  ASSERT_FALSE(store().append("rejected", expected_version::exact(4), make_events(1, 1)));
  std::vector<stream_info> seen;
  ASSERT_FALSE(store().for_each_stream([&](const stream_info& s) {
    seen.push_back(s);
    return true;
  }));
  ASSERT_EQ(seen.size(), 301u) << "every stream once, deleted ones too, none for a rejected append";
  EXPECT_EQ(seen.front().stream_id, "never-written");
  EXPECT_TRUE(seen.front().deleted);
  EXPECT_EQ(seen.front().version, 0u);
  for (size_t i = 1; i < seen.size(); ++i) {
    EXPECT_LT(seen[i - 1].stream_id, seen[i].stream_id);
    auto info = store().stream_info(seen[i].stream_id);
    ASSERT_OK(info);
    EXPECT_EQ(seen[i].version, info->version);
    EXPECT_EQ(seen[i].deleted, info->deleted);
    EXPECT_EQ(seen[i].updated_at, info->updated_at);
    EXPECT_TRUE(seen[i].exists);
  }
  EXPECT_EQ(seen[8].stream_id, "s-007");
  EXPECT_TRUE(seen[8].deleted);
  size_t visits = 0;
  ASSERT_FALSE(store().for_each_stream([&](const stream_info&) { return ++visits < 10; }));
  EXPECT_EQ(visits, 10u) << "returning false stops the listing";

  for (auto id : {"s-200", "s-100", "s-150"})
    ASSERT_OK(store().save_snapshot({id, 1, 2, "state", map_payload(7), 0}));
  std::vector<snapshot> snaps;
  ASSERT_FALSE(store().for_each_snapshot([&](const snapshot& s) {
    snaps.push_back(s);
    return true;
  }));
  ASSERT_EQ(snaps.size(), 3u);
  EXPECT_EQ(snaps[0].stream_id, "s-100");
  EXPECT_EQ(snaps[2].stream_id, "s-200");
  EXPECT_EQ(snaps[1].snapshot_version, 2u);
  EXPECT_EQ(snaps[1].data, map_payload(7));

  ASSERT_OK(store().save_checkpoint("handler:b", 40));
  ASSERT_OK(store().save_checkpoint("handler:a", 12));
  auto cps = store().checkpoints();
  ASSERT_OK(cps);
  ASSERT_EQ(cps->size(), 2u);
  EXPECT_EQ((*cps)[0], (std::pair<std::string, uint64_t>{"handler:a", 12}));
  EXPECT_EQ((*cps)[1], (std::pair<std::string, uint64_t>{"handler:b", 40}));
}

INSTANTIATE_TEST_SUITE_P(stores, conformance, ::testing::ValuesIn(factories()),
                         [](const auto& info) { return info.param.name; });

} // namespace
