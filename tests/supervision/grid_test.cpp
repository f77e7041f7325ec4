// The OTP supervisor test grid (supervisor_SUITE's shape), on a deterministic
// scheduler and clock: restart types x exit kinds, strategies x {restart,
// escalation, sibling failing to restart}, shutdown policies against a child
// that ignores shutdown, and a hanging restart loop.

#include "harness.hpp"

using namespace sourcery::supervision;
using namespace sourcery::testing;
using namespace std::chrono_literals;

namespace {

supervisor_flags flags_of(strategy how, int intensity = 10, std::chrono::milliseconds period = 5s) {
  supervisor_flags f;
  f.name = "sup";
  f.how = how;
  f.intensity = intensity;
  f.period = period;
  return f;
}

// -- restart type x exit kind ----------------------------------------------------

struct restart_case {
  restart_type restart;
  exit_kind kind;
};

class restart_grid : public world, public ::testing::WithParamInterface<restart_case> {};

TEST_P(restart_grid, restarts_exactly_when_otp_does) {
  auto [restart, kind] = GetParam();
  auto j = std::make_shared<journal>();
  auto sup = spawn_sup(flags_of(strategy::one_for_one), {worker_spec(j, "w", restart)});
  auto first = j->current["w"];
  send_exit_kind(first, kind);
  bool abnormal = kind == exit_kind::crash || kind == exit_kind::kill;
  bool expect_restart = restart == restart_type::permanent || (restart == restart_type::transient && abnormal);
  EXPECT_EQ(j->starts["w"], expect_restart ? 2 : 1);
  auto kids = children(sup);
  if (restart == restart_type::temporary) {
    EXPECT_TRUE(kids.empty()) << "a temporary child is forgotten once it ends";
  } else {
    ASSERT_EQ(kids.size(), 1u);
    EXPECT_EQ(static_cast<bool>(kids[0].actor), expect_restart);
    EXPECT_EQ(kids[0].restarts, expect_restart ? 1u : 0u);
    if (expect_restart) {
      EXPECT_NE(kids[0].actor, first);
      EXPECT_EQ(ping(kids[0].actor), "w");
    }
  }
}

std::vector<restart_case> restart_cases() {
  std::vector<restart_case> out;
  for (auto r : {restart_type::permanent, restart_type::transient, restart_type::temporary})
    for (auto k : {exit_kind::normal, exit_kind::shutdown, exit_kind::crash, exit_kind::kill})
      out.push_back({r, k});
  return out;
}

std::string restart_name(restart_type r) {
  return r == restart_type::permanent ? "permanent" : r == restart_type::transient ? "transient" : "temporary";
}

INSTANTIATE_TEST_SUITE_P(otp, restart_grid, ::testing::ValuesIn(restart_cases()), [](const auto& info) {
  return restart_name(info.param.restart) + "_" + to_string(info.param.kind);
});

// -- strategy x {basic, escalation, sibling fails to restart} ------------------------

class strategy_grid : public world, public ::testing::WithParamInterface<strategy> {
protected:
  /// a, b, c as static children, or three dynamic children for simple_one_for_one.
  caf::actor start_abc(std::shared_ptr<journal> j, int intensity = 10, worker_options c_opts = {}) {
    auto how = GetParam();
    if (how == strategy::simple_one_for_one) {
      auto sup = spawn_sup(flags_of(how, intensity), {worker_spec(j, "template", restart_type::permanent, c_opts)});
      for (std::string id : {"a", "b", "c"})
        EXPECT_TRUE(call<caf::actor>(sup, start_child_atom::value, caf::make_message(id)));
      return sup;
    }
    return spawn_sup(flags_of(how, intensity),
                     {worker_spec(j, "a"), worker_spec(j, "b"), worker_spec(j, "c", restart_type::permanent, c_opts)});
  }
};

TEST_P(strategy_grid, basic_restart) {
  auto j = std::make_shared<journal>();
  auto sup = start_abc(j);
  auto before = j->current;
  j->stops.clear();
  send_exit_kind(j->current["b"], exit_kind::crash);
  std::map<std::string, int> expected_starts;
  std::vector<std::string> expected_stops;
  switch (GetParam()) {
    case strategy::one_for_one:
    case strategy::simple_one_for_one:
      expected_starts = {{"a", 1}, {"b", 2}, {"c", 1}};
      expected_stops = {"b"};
      break;
    case strategy::one_for_all:
      expected_starts = {{"a", 2}, {"b", 2}, {"c", 2}};
      expected_stops = {"b", "c", "a"}; // the failed one, then the others in reverse start order
      break;
    case strategy::rest_for_one:
      expected_starts = {{"a", 1}, {"b", 2}, {"c", 2}};
      expected_stops = {"b", "c"};
      break;
  }
  for (auto& [id, n] : expected_starts)
    EXPECT_EQ(j->starts[id], n) << id;
  EXPECT_EQ(j->stops, expected_stops);
  for (std::string id : {"a", "b", "c"})
    EXPECT_EQ(ping(j->current[id]), id);
  auto counts = call<child_counts>(sup, count_children_atom::value);
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->active, 3u);
}

TEST_P(strategy_grid, escalation_past_intensity) {
  auto j = std::make_shared<journal>();
  auto sup = start_abc(j, /*intensity*/ 2);
  auto down = watch(sup);
  send_exit_kind(j->current["a"], exit_kind::crash);
  advance(1s);
  send_exit_kind(j->current["a"], exit_kind::crash);
  EXPECT_FALSE(down->has_value()) << "two restarts within the period are allowed";
  advance(1s);
  send_exit_kind(j->current["a"], exit_kind::crash);
  ASSERT_TRUE(down->has_value()) << "a third restart within 5 s gives up";
  EXPECT_EQ(code_of(**down), supervision_errc::reached_max_restart_intensity) << describe(**down);
  for (std::string id : {"a", "b", "c"})
    EXPECT_FALSE(call<std::string>(j->current[id], ping_atom::value)) << id << " outlived its supervisor";
}

TEST_P(strategy_grid, restarts_spread_over_time_do_not_escalate) {
  auto j = std::make_shared<journal>();
  auto sup = start_abc(j, /*intensity*/ 1);
  auto down = watch(sup);
  for (int i = 0; i < 5; ++i) {
    send_exit_kind(j->current["a"], exit_kind::crash);
    advance(6s); // the window is 5 s
  }
  EXPECT_FALSE(down->has_value());
  EXPECT_EQ(j->starts["a"], 6);
}

TEST_P(strategy_grid, sibling_failing_to_restart) {
  auto j = std::make_shared<journal>();
  // c can start once; afterwards its start function fails. (For
  // simple_one_for_one the template refuses any second start of a name.)
  auto sup = start_abc(j, /*intensity*/ 3, {.ignore_shutdown = false, .fail_start_after = 1});
  auto down = watch(sup);
  bool alone = GetParam() == strategy::one_for_one || GetParam() == strategy::simple_one_for_one;
  send_exit_kind(j->current[alone ? "c" : "a"], exit_kind::crash);
  // Every failed start is retried through the mailbox and counts as a
  // restart: the supervisor gives up once intensity is exceeded.
  ASSERT_TRUE(down->has_value());
  EXPECT_EQ(code_of(**down), supervision_errc::reached_max_restart_intensity) << describe(**down);
  EXPECT_EQ(j->starts["c"], 1);
  for (std::string id : {"a", "b"})
    EXPECT_FALSE(call<std::string>(j->current[id], ping_atom::value)) << id << " outlived its supervisor";
}

INSTANTIATE_TEST_SUITE_P(otp, strategy_grid,
                         ::testing::Values(strategy::one_for_one, strategy::one_for_all, strategy::rest_for_one,
                                           strategy::simple_one_for_one),
                         [](const auto& info) { return std::string{to_string(info.param)}; });

// -- shutdown policies against a child that ignores shutdown --------------------------

class shutdown_grid : public world {};

TEST_F(shutdown_grid, timeout_kills_after_the_timeout) {
  auto j = std::make_shared<journal>();
  auto spec = worker_spec(j, "stubborn", restart_type::permanent, {.ignore_shutdown = true});
  spec.shutdown = shutdown_policy::timeout(1000ms);
  auto sup = spawn_sup(flags_of(strategy::one_for_one), {spec});
  auto done = std::make_shared<bool>(false);
  sys().spawn([=](caf::event_based_actor* self) {
    self->request(sup, caf::infinite, terminate_child_atom::value, std::string{"stubborn"})
      .then([=]() { *done = true; }, [](caf::error&) {});
  });
  run();
  EXPECT_FALSE(*done) << "the child ignored the shutdown request";
  EXPECT_TRUE(call<std::string>(j->current["stubborn"], ping_atom::value));
  advance(999ms);
  EXPECT_FALSE(*done);
  advance(1ms);
  EXPECT_TRUE(*done);
  EXPECT_FALSE(call<std::string>(j->current["stubborn"], ping_atom::value));
  EXPECT_EQ(j->starts["stubborn"], 1) << "a terminated child is not restarted";
}

TEST_F(shutdown_grid, brutal_kill_does_not_wait) {
  auto j = std::make_shared<journal>();
  auto spec = worker_spec(j, "stubborn", restart_type::permanent, {.ignore_shutdown = true});
  spec.shutdown = shutdown_policy::brutal_kill();
  auto sup = spawn_sup(flags_of(strategy::one_for_one), {spec});
  EXPECT_TRUE(call<caf::unit_t>(sup, terminate_child_atom::value, std::string{"stubborn"}));
  EXPECT_FALSE(call<std::string>(j->current["stubborn"], ping_atom::value));
}

TEST_F(shutdown_grid, infinity_waits_as_long_as_it_takes) {
  auto j = std::make_shared<journal>();
  auto spec = worker_spec(j, "stubborn", restart_type::permanent, {.ignore_shutdown = true});
  spec.shutdown = shutdown_policy::infinity();
  auto sup = spawn_sup(flags_of(strategy::one_for_one), {spec});
  auto done = std::make_shared<bool>(false);
  sys().spawn([=](caf::event_based_actor* self) {
    self->request(sup, caf::infinite, terminate_child_atom::value, std::string{"stubborn"})
      .then([=]() { *done = true; }, [](caf::error&) {});
  });
  run();
  advance(1h);
  EXPECT_FALSE(*done);
  caf::anon_send_exit(j->current["stubborn"], caf::exit_reason::kill);
  run();
  EXPECT_TRUE(*done);
}

TEST_F(shutdown_grid, stopping_a_tree_stops_children_in_reverse_order) {
  auto j = std::make_shared<journal>();
  supervisor_flags inner = flags_of(strategy::one_for_one);
  inner.name = "inner";
  child_spec sub;
  sub.id = "inner";
  sub.type = child_type::supervisor;
  sub.start = supervisor_start(inner, {worker_spec(j, "x"), worker_spec(j, "y")});
  auto sup = spawn_sup(flags_of(strategy::one_for_one), {worker_spec(j, "a"), sub, worker_spec(j, "z")});
  auto down = watch(sup);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  run();
  ASSERT_TRUE(down->has_value());
  EXPECT_EQ(**down, caf::exit_reason::user_shutdown);
  EXPECT_EQ(j->stops, (std::vector<std::string>{"z", "y", "x", "a"}));
}

// -- a hanging restart loop --------------------------------------------------------------

TEST_F(shutdown_grid, a_shutdown_request_gets_through_a_restart_loop) {
  auto j = std::make_shared<journal>();
  // Huge intensity: the supervisor would retry for a very long time.
  auto sup = spawn_sup(flags_of(strategy::one_for_one, 1'000'000, 1h),
                       {worker_spec(j, "flaky", restart_type::permanent, {.ignore_shutdown = false, .fail_start_after = 1})});
  auto down = watch(sup);
  caf::anon_send(j->current["flaky"], crash_atom::value);
  sched_->run(50); // the retry loop is running
  EXPECT_FALSE(down->has_value());
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  sched_->run(50);
  ASSERT_TRUE(down->has_value()) << "the shutdown request was starved by the restart loop";
  EXPECT_EQ(**down, caf::exit_reason::user_shutdown);
}

} // namespace
