// effect_log: an effect and the mark of its event commit together, so a
// redelivered event (at-least-once) does not apply twice.

#include <gtest/gtest.h>

#include "../support/temp_dir.hpp"
#include "sourcery/actors/events/idempotence.hpp"

using sourcery::effect_log;
using sourcery::persistence::projection_store;

namespace {

sourcery::event_context event_at(uint64_t position, std::string stream = "account-1") {
  sourcery::event_context ctx;
  ctx.position = position;
  ctx.stream_id = std::move(stream);
  ctx.event_id = sourcery::persistence::uuid::random();
  return ctx;
}

struct effect_log_test : ::testing::Test {
  sourcery::testing::temp_dir dir;
  std::unique_ptr<projection_store> store;
  void SetUp() override {
    auto s = projection_store::open({dir.str()});
    ASSERT_TRUE(s);
    store = std::move(*s);
  }
  /// The effect under test: adds one to a counter row.
  caf::expected<bool> count(effect_log& log, const sourcery::event_context& ctx) {
    return log.once(ctx, [](effect_log::writer& w) -> caf::error {
      auto n = w.get("counts", "n");
      w.put("counts", "n", std::to_string((n ? std::stoi(*n) : 0) + 1));
      return {};
    });
  }
  int counted() {
    auto n = store->get("mailer", "counts", "n");
    return n && *n ? std::stoi(**n) : 0;
  }
};

} // namespace

TEST_F(effect_log_test, a_redelivered_event_is_passed_over) {
  effect_log log{*store, "mailer"};
  for (uint64_t p = 1; p <= 10; ++p)
    ASSERT_TRUE(*count(log, event_at(p)));
  // A crash before the handler's checkpoint: events 5..10 come again.
  for (uint64_t p = 5; p <= 10; ++p)
    EXPECT_FALSE(*count(log, event_at(p))) << p;
  EXPECT_EQ(counted(), 10);
  EXPECT_EQ(*log.applied("account-1"), 10u);
  EXPECT_TRUE(*count(log, event_at(11)));
  EXPECT_EQ(counted(), 11);
}

TEST_F(effect_log_test, marks_are_per_key_and_survive_reopening) {
  {
    effect_log log{*store, "mailer"};
    ASSERT_TRUE(*count(log, event_at(7, "account-a")));
    ASSERT_TRUE(*count(log, event_at(3, "account-b"))); // another stream: its own order
  }
  store.reset();
  auto reopened = projection_store::open({dir.str()});
  ASSERT_TRUE(reopened);
  store = std::move(*reopened);
  effect_log log{*store, "mailer"};
  EXPECT_FALSE(*count(log, event_at(7, "account-a")));
  EXPECT_FALSE(*count(log, event_at(3, "account-b")));
  EXPECT_TRUE(*count(log, event_at(8, "account-b")));
  EXPECT_EQ(counted(), 3);
}

TEST_F(effect_log_test, a_failed_effect_leaves_no_mark_and_no_writes) {
  effect_log log{*store, "mailer"};
  auto r = log.once(event_at(1), [](effect_log::writer& w) -> caf::error {
    w.put("counts", "n", "99");
    return sourcery::persistence::make_error(sourcery::persistence::store_errc::handler_failed, "smtp down");
  });
  EXPECT_FALSE(r);
  EXPECT_EQ(counted(), 0);
  EXPECT_EQ(*log.applied("account-1"), 0u);
  EXPECT_TRUE(*count(log, event_at(1))); // the retry applies it
  EXPECT_EQ(counted(), 1);
}

TEST(idempotency_key, is_the_event_id) {
  auto ctx = event_at(1);
  EXPECT_EQ(sourcery::idempotency_key(ctx), ctx.event_id.to_string());
  EXPECT_EQ(sourcery::idempotency_key(ctx), sourcery::idempotency_key(ctx));
}
