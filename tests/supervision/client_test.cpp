// The blocking control API on the real, multi-threaded scheduler: what a
// `main` or an embedding server uses. Ends with the actor system shutting
// down cleanly: no actor left running, no hang.

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include "harness.hpp"

using namespace sourcery::supervision;
using namespace sourcery::testing;
using namespace std::chrono_literals;

namespace {

caf::actor_system_config& quiet_config() {
  static caf::actor_system_config cfg = [] {
    caf::actor_system_config c;
    c.set("logger.verbosity", caf::atom("quiet"));
    return c;
  }();
  return cfg;
}

TEST(supervisor_client, start_control_and_stop_on_real_threads) {
  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  auto j = std::make_shared<journal>(); // only touched by workers' starts: serialised by the supervisor
  {
    supervisor_flags f;
    f.name = "app";
    auto sup = supervisor::start(sys, f, {worker_spec(j, "store"), worker_spec(j, "gateway")});
    ASSERT_TRUE(sup) << describe(sup.error());
    auto kids = sup->which_children();
    ASSERT_TRUE(kids);
    ASSERT_EQ(kids->size(), 2u);
    auto extra = sup->start_child(worker_spec(j, "metrics"));
    ASSERT_TRUE(extra) << describe(extra.error());

    // Crash "store" and wait until the supervisor has replaced it.
    caf::scoped_actor self{sys};
    auto old = (*kids)[0].actor;
    self->monitor(old);
    self->send(old, crash_atom::value);
    self->receive([](caf::down_msg&) {});
    caf::actor fresh;
    for (int attempt = 0; attempt < 10000 && !fresh; ++attempt) {
      auto now = sup->which_children();
      ASSERT_TRUE(now);
      if ((*now)[0].restarts == 1 && (*now)[0].actor)
        fresh = (*now)[0].actor;
    }
    ASSERT_TRUE(fresh) << "store was not restarted";
    std::string answer;
    self->request(fresh, 5s, ping_atom::value).receive([&](std::string& s) { answer = s; }, [](caf::error&) {});
    EXPECT_EQ(answer, "store");

    auto counts = sup->count_children();
    ASSERT_TRUE(counts);
    EXPECT_EQ(counts->active, 3u);
    EXPECT_TRUE(sup->terminate_child("metrics"));
    EXPECT_EQ(code_of(sup->delete_child("store").error()), supervision_errc::child_running);
    EXPECT_TRUE(sup->delete_child("metrics"));
    auto tree = sup->tree();
    ASSERT_TRUE(tree);
    EXPECT_NE(tree->find("store [worker, permanent] restarts=1 running"), std::string::npos) << *tree;
    sup->stop();
  }
  EXPECT_EQ(sys.registry().running(), 0u) << "actors outlived their supervisor";
}

TEST(supervisor_client, start_reports_the_first_failure) {
  caf::actor_system sys{quiet_config()};
  auto j = std::make_shared<journal>();
  j->starts["db"] = 1;
  auto sup = supervisor::start(sys, supervisor_flags{},
                               {worker_spec(j, "cache"), worker_spec(j, "db", restart_type::permanent, {.fail_start_after = 1})});
  ASSERT_FALSE(sup);
  EXPECT_EQ(code_of(sup.error()), supervision_errc::start_failed);
  EXPECT_NE(describe(sup.error()).find("db"), std::string::npos) << describe(sup.error());
  EXPECT_EQ(sys.registry().running(), 0u) << "the started child was not stopped";
}

} // namespace
