// Fencing on a real PostgreSQL server: an append, a handler's checkpoint
// and a projection's write commit only while the writer holds the lease
// that covers them, at its epoch, unexpired by the database's clock -- so
// a node that lost a lease (paused, cut off) cannot write after the next
// owner took over, whatever it believes.

#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/append_fence.hpp"
#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/postgres_coordination.hpp"
#include "sourcery/persistence/postgres_projection_store.hpp"
#include "test_events.hpp"

using namespace sourcery::persistence;
using namespace std::chrono_literals;
using sourcery::testing::make_events;

namespace {

/// A node's view of its leases: one lease per stream ("lease:<stream>") and
/// per checkpoint ("handler:<name>"), at the epochs it believes it holds.
class believed_leases final : public append_fence {
public:
  explicit believed_leases(std::string owner) : owner_(std::move(owner)) {}
  void hold(const std::string& lease, int64_t epoch) {
    std::lock_guard guard{mtx_};
    epochs_[lease] = epoch;
  }
  const std::string& cluster() const override { return cluster_; }
  std::string owner() const override { return owner_; }
  fence_lease lease_for(std::string_view stream) const override { return named("lease:" + std::string{stream}); }
  fence_lease lease_for_checkpoint(std::string_view name) const override {
    auto n = std::string{name};
    return named(n.rfind("handler:", 0) == 0 ? n : "handler:" + n);
  }

private:
  fence_lease named(const std::string& lease) const {
    std::lock_guard guard{mtx_};
    auto i = epochs_.find(lease);
    return {lease, i == epochs_.end() ? 0 : i->second};
  }
  std::string cluster_ = "bank", owner_;
  mutable std::mutex mtx_;
  std::map<std::string, int64_t> epochs_;
};

struct fenced_nodes : ::testing::Test {
  sourcery::testing::temp_dir dir;
  std::unique_ptr<postgres_coordination> leases;
  std::unique_ptr<postgres_store> store;
  std::string a1, b1; ///< the leases' owners: nodes a and b, up members

  void SetUp() override {
    coordination_options c;
    c.conninfo = sourcery::testing::test_pg_uri();
    c.schema = sourcery::testing::test_schema(dir);
    c.setup = schema_setup::create;
    auto opened = postgres_coordination::open(c);
    ASSERT_TRUE(opened) << describe(opened.error());
    leases = std::move(*opened);
    auto ia = leases->join("bank", "a:1");
    auto ib = leases->join("bank", "b:1");
    ASSERT_TRUE(ia && ib);
    a1 = lease_owner("a:1", *ia);
    b1 = lease_owner("b:1", *ib);
    store = sourcery::testing::open_test_pg(sourcery::testing::test_pg_options(dir));
    ASSERT_TRUE(store);
  }
};

TEST_F(fenced_nodes, an_append_commits_only_under_the_lease_its_writer_holds) {
  auto a = std::make_shared<believed_leases>(a1);
  ASSERT_FALSE(store->fence_appends(a));
  // Not held at all: refused, nothing written.
  auto r = store->append("acct-1", expected_version::any(), make_events(1, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::fenced) << describe(r.error());
  EXPECT_EQ(store->head_position(), 0u);

  auto epoch = leases->acquire("bank", "lease:acct-1", a1, 10s);
  ASSERT_TRUE(epoch && *epoch);
  a->hold("lease:acct-1", **epoch);
  ASSERT_TRUE(store->append("acct-1", expected_version::any(), make_events(2, 1)));

  // The lease moves on (a's expired, b took it): a's belief is stale.
  ASSERT_TRUE(leases->release("bank", "lease:acct-1", a1, **epoch));
  auto b_epoch = leases->acquire("bank", "lease:acct-1", b1, 10s);
  ASSERT_TRUE(b_epoch && *b_epoch);
  EXPECT_GT(**b_epoch, **epoch);
  r = store->append("acct-1", expected_version::any(), make_events(3, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::fenced);
  // Even holding the right name at the new epoch: another owner's lease.
  a->hold("lease:acct-1", **b_epoch);
  EXPECT_EQ(code_of(store->append("acct-1", expected_version::any(), make_events(4, 1)).error()), store_errc::fenced);
  auto stream = store->read_stream("acct-1", 1, 10);
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->size(), 1u) << "only the append made under the lease";
}

TEST_F(fenced_nodes, an_expired_lease_fences_by_the_databases_clock) {
  auto a = std::make_shared<believed_leases>(a1);
  ASSERT_FALSE(store->fence_appends(a));
  auto epoch = leases->acquire("bank", "lease:s", a1, 300ms);
  ASSERT_TRUE(epoch && *epoch);
  a->hold("lease:s", **epoch);
  ASSERT_TRUE(store->append("s", expected_version::any(), make_events(1, 1)));
  std::this_thread::sleep_for(400ms); // a paused node: its lease ran out meanwhile
  auto r = store->append("s", expected_version::any(), make_events(2, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), store_errc::fenced);
}

TEST_F(fenced_nodes, one_batch_answers_each_append_by_its_own_lease) {
  auto a = std::make_shared<believed_leases>(a1);
  ASSERT_FALSE(store->fence_appends(a));
  auto held = leases->acquire("bank", "lease:mine", a1, 10s);
  ASSERT_TRUE(held && *held);
  a->hold("lease:mine", **held);
  ASSERT_TRUE(leases->acquire("bank", "lease:theirs", b1, 10s).value());
  a->hold("lease:theirs", 1);
  // Queued together: the group commit decides each append by its lease.
  std::vector<std::future<caf::expected<append_result>>> answers;
  for (int i = 0; i < 20; ++i) {
    auto p = std::make_shared<std::promise<caf::expected<append_result>>>();
    answers.push_back(p->get_future());
    store->append_async(i % 2 == 0 ? "mine" : "theirs", expected_version::any(), make_events(10 + i, 1),
                        [p](caf::expected<append_result> r) { p->set_value(std::move(r)); });
  }
  for (int i = 0; i < 20; ++i) {
    auto r = answers[static_cast<size_t>(i)].get();
    if (i % 2 == 0)
      EXPECT_TRUE(r) << describe(r.error());
    else
      EXPECT_EQ(code_of(r.error()), store_errc::fenced);
  }
  EXPECT_EQ(store->head_position(), 10u);
  // Unfenced again (no cluster): every append goes through.
  ASSERT_FALSE(store->fence_appends(nullptr));
  EXPECT_TRUE(store->append("theirs", expected_version::any(), make_events(99, 1)));
}

TEST_F(fenced_nodes, checkpoints_move_only_under_their_handlers_lease_and_never_back_from_a_stale_node) {
  auto a = std::make_shared<believed_leases>(a1);
  auto b = std::make_shared<believed_leases>(b1);
  auto store_b = sourcery::testing::open_test_pg(sourcery::testing::test_pg_options(dir));
  ASSERT_TRUE(store_b);
  ASSERT_FALSE(store->fence_appends(a));
  ASSERT_FALSE(store_b->fence_appends(b));
  auto ea = leases->acquire("bank", "handler:mailer", a1, 10s);
  ASSERT_TRUE(ea && *ea);
  a->hold("handler:mailer", **ea);
  ASSERT_TRUE(store->save_checkpoint("handler:mailer", 100));
  EXPECT_EQ(code_of(store_b->save_checkpoint("handler:mailer", 50).error()), store_errc::fenced);
  // The lock moves to b, which goes on; a, paused meanwhile, wakes up.
  ASSERT_TRUE(leases->release("bank", "handler:mailer", a1, **ea));
  auto eb = leases->acquire("bank", "handler:mailer", b1, 10s);
  ASSERT_TRUE(eb && *eb);
  b->hold("handler:mailer", **eb);
  ASSERT_TRUE(store_b->save_checkpoint("handler:mailer", 200));
  EXPECT_EQ(code_of(store->save_checkpoint("handler:mailer", 150).error()), store_errc::fenced);
  EXPECT_EQ(store->load_checkpoint("handler:mailer").value(), std::optional<uint64_t>{200});

  // A projection's writes in the read models, the same way.
  postgres_read_model_options ro;
  ro.conninfo = sourcery::testing::test_pg_uri();
  ro.schema = sourcery::testing::test_schema(dir);
  auto models_a = postgres_projection_store::open(ro);
  auto models_b = postgres_projection_store::open(ro);
  ASSERT_TRUE(models_a && models_b);
  ASSERT_FALSE((*models_a)->fence_writes(a));
  ASSERT_FALSE((*models_b)->fence_writes(b));
  auto put = [](projection_store::writer& w) {
    w.put("t", "k", "v");
    return caf::error{};
  };
  auto pb = leases->acquire("bank", "handler:balances", b1, 10s);
  ASSERT_TRUE(pb && *pb);
  b->hold("handler:balances", **pb);
  EXPECT_FALSE((*models_b)->write("balances", 7, put));
  auto refused = (*models_a)->write("balances", 8, put);
  EXPECT_EQ(code_of(refused), store_errc::fenced) << describe(refused);
  EXPECT_EQ((*models_a)->checkpoint("balances").value(), std::optional<uint64_t>{7});
}

TEST_F(fenced_nodes, a_renewal_never_waits_behind_a_fenced_write_and_the_next_owner_waits_for_it_to_commit) {
  // A projection's write of node a holds its handler's lease row (FOR KEY
  // SHARE) for its whole transaction; here it is held open on purpose.
  auto a = std::make_shared<believed_leases>(a1);
  postgres_read_model_options ro;
  ro.conninfo = sourcery::testing::test_pg_uri();
  ro.schema = sourcery::testing::test_schema(dir);
  ro.idle_in_transaction_timeout = 20s; // held open by the test, not paused
  auto models_a = postgres_projection_store::open(ro);
  ASSERT_TRUE(models_a);
  ASSERT_FALSE((*models_a)->fence_writes(a));
  auto ea = leases->acquire("bank", "handler:balances", a1, 10s);
  ASSERT_TRUE(ea && *ea);
  a->hold("handler:balances", **ea);
  std::promise<void> inside, go;
  auto writing = std::async(std::launch::async, [&] {
    return (*models_a)->write("balances", 5, [&](projection_store::writer& w) {
      w.put("t", "k", "by a");
      inside.set_value();
      go.get_future().wait();
      return caf::error{};
    });
  });
  ASSERT_EQ(inside.get_future().wait_for(10s), std::future_status::ready);

  // a's renewals go on meanwhile.
  auto t0 = std::chrono::steady_clock::now();
  auto renewed = leases->renew_leases("bank", a1, 10s, {"handler:balances"});
  ASSERT_TRUE(renewed) << describe(renewed.error());
  EXPECT_EQ(renewed->size(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 900ms) << "a renewal queued behind a data write";

  // a gives the lease up; b may not take it while a's write may still
  // commit: its acquire waits for the row (and gives up at lock_timeout).
  ASSERT_TRUE(leases->release("bank", "handler:balances", a1, **ea));
  auto early = leases->acquire("bank", "handler:balances", b1, 10s);
  EXPECT_FALSE(early && *early) << "b took the lease while a's fenced write was open";
  go.set_value();
  EXPECT_FALSE(writing.get()) << "a's write began under its lease and commits";
  auto eb = leases->acquire("bank", "handler:balances", b1, 10s);
  ASSERT_TRUE(eb && *eb) << (eb ? "held" : describe(eb.error()));
  EXPECT_GT(**eb, **ea);
  // From here on a is fenced: nothing of a commits after b took over.
  auto late = (*models_a)->write("balances", 6, [](projection_store::writer& w) {
    w.put("t", "k", "late");
    return caf::error{};
  });
  EXPECT_EQ(code_of(late), store_errc::fenced) << describe(late);
  EXPECT_EQ((*models_a)->checkpoint("balances").value(), std::optional<uint64_t>{5});
}

} // namespace
