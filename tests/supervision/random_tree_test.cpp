// A three-level tree under random crash injection, checked after every step:
// every permanent worker is alive and answering, the counts are right and no
// actor leaked. Deterministic (test scheduler, manual clock); the seed is
// printed and replayable with --gtest_random_seed=SEED.

#include <random>

#include "harness.hpp"

using namespace sourcery::supervision;
using namespace sourcery::testing;
using namespace std::chrono_literals;

namespace {

class random_tree : public world {};

TEST_F(random_tree, invariants_hold_under_random_failures) {
  auto seed = static_cast<uint32_t>(::testing::UnitTest::GetInstance()->random_seed());
  std::mt19937 rng{seed};
  std::printf("random_tree seed %u (replay: --gtest_random_seed=%u)\n", seed, seed);
  auto j = std::make_shared<journal>();
  std::vector<std::string> workers;

  auto leaf_supervisor = [&](const std::string& name) {
    supervisor_flags f;
    f.name = name;
    f.intensity = 3;
    f.period = 5s;
    std::vector<child_spec> kids;
    for (int i = 0; i < 3; ++i) {
      auto id = name + "/w" + std::to_string(i);
      workers.push_back(id);
      kids.push_back(worker_spec(j, id));
    }
    child_spec spec;
    spec.id = name;
    spec.type = child_type::supervisor;
    spec.start = supervisor_start(f, kids);
    return spec;
  };
  std::vector<child_spec> mids;
  const strategy strategies[] = {strategy::one_for_one, strategy::one_for_all, strategy::rest_for_one};
  for (int m = 0; m < 3; ++m) {
    std::string name = "mid" + std::to_string(m);
    supervisor_flags f;
    f.name = name;
    f.how = strategies[m];
    f.intensity = 3;
    f.period = 5s;
    std::vector<child_spec> kids;
    for (int i = 0; i < 3; ++i) {
      auto id = name + "/w" + std::to_string(i);
      workers.push_back(id);
      kids.push_back(worker_spec(j, id));
    }
    kids.push_back(leaf_supervisor(name + "/leaf"));
    child_spec spec;
    spec.id = name;
    spec.type = child_type::supervisor;
    spec.start = supervisor_start(f, kids);
    mids.push_back(spec);
  }
  supervisor_flags root_flags;
  root_flags.name = "root";
  root_flags.intensity = 1'000'000; // the root never gives up here
  root_flags.period = 1s;
  auto root = spawn_sup(root_flags, mids);
  // 1 root + 3 mids + 3 leaves supervisors, 18 workers.
  const size_t expected_actors = 1 + 3 + 3 + workers.size();
  size_t base_running = sys().registry().running() - expected_actors;

  auto check = [&](int step) {
    for (auto& w : workers)
      ASSERT_EQ(ping(j->current[w]), w) << "step " << step << ": " << w << " is not serving (seed " << seed << ")";
    auto counts = call<child_counts>(root, count_children_atom::value);
    ASSERT_TRUE(counts);
    ASSERT_EQ(counts->active, 3u) << "step " << step;
    for (auto& mid : children(root)) {
      auto c = call<child_counts>(mid.actor, count_children_atom::value);
      ASSERT_TRUE(c) << "step " << step;
      ASSERT_EQ(c->active, 4u) << "step " << step;
      ASSERT_EQ(c->supervisors, 1u);
    }
    ASSERT_EQ(sys().registry().running(), base_running + expected_actors) << "step " << step << ": leaked or lost actors";
  };
  check(-1);

  const int steps = 3000;
  int crashes = 0, kills = 0, supervisor_kills = 0;
  for (int step = 0; step < steps; ++step) {
    auto roll = rng() % 100;
    if (roll < 45) {
      send_exit_kind(j->current[workers[rng() % workers.size()]], exit_kind::crash);
      ++crashes;
    } else if (roll < 70) {
      send_exit_kind(j->current[workers[rng() % workers.size()]], rng() % 2 ? exit_kind::kill : exit_kind::normal);
      ++kills;
    } else if (roll < 75) {
      // Kill a whole middle or leaf supervisor: its subtree goes with it.
      auto mid = children(root)[rng() % 3].actor;
      if (rng() % 2) {
        caf::anon_send_exit(mid, caf::exit_reason::kill);
      } else {
        auto leaf = children(mid)[3].actor;
        caf::anon_send_exit(leaf, caf::exit_reason::kill);
      }
      run();
      ++supervisor_kills;
    } else {
      advance(std::chrono::milliseconds{rng() % 3000});
    }
    check(step);
    if (::testing::Test::HasFatalFailure())
      return;
  }
  std::printf("random_tree: %d steps, %d crashes, %d kills/exits, %d supervisor kills\n", steps, crashes, kills,
              supervisor_kills);
  auto down = watch(root);
  caf::anon_send_exit(root, caf::exit_reason::user_shutdown);
  run();
  ASSERT_TRUE(down->has_value());
  for (auto& w : workers)
    EXPECT_EQ(ping(j->current[w]), "dead");
  EXPECT_EQ(sys().registry().running(), base_running) << "actors outlived the tree";
}

} // namespace
