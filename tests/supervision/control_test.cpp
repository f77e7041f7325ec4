// Child-spec validation, the control API, introspection, backoff and
// auto_shutdown, on the deterministic scheduler.

#include "harness.hpp"

using namespace sourcery::supervision;
using namespace sourcery::testing;
using namespace std::chrono_literals;

namespace {

class control : public world {};

backoff_policy make_backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, double multiplier = 2.0,
                            double jitter = 0.2) {
  backoff_policy b;
  b.initial = initial;
  b.max = max;
  b.multiplier = multiplier;
  b.jitter = jitter;
  return b;
}

supervisor_flags one_for_one(int intensity = 10) {
  supervisor_flags f;
  f.name = "root";
  f.intensity = intensity;
  return f;
}

TEST(child_spec_validation, each_bad_field_has_its_own_error) {
  auto j = std::make_shared<journal>();
  auto good = worker_spec(j, "w");
  EXPECT_FALSE(validate(good));
  auto bad = good;
  bad.id = "";
  EXPECT_EQ(code_of(validate(bad)), supervision_errc::invalid_child_id);
  bad = good;
  bad.id = std::string(256, 'x');
  EXPECT_EQ(code_of(validate(bad)), supervision_errc::invalid_child_id);
  bad = good;
  bad.start = nullptr;
  EXPECT_EQ(code_of(validate(bad)), supervision_errc::invalid_start);
  bad = good;
  bad.significant = true; // permanent
  EXPECT_EQ(code_of(validate(bad)), supervision_errc::invalid_significant);
  bad.restart = restart_type::transient;
  EXPECT_FALSE(validate(bad));
  bad = good;
  bad.shutdown = shutdown_policy::timeout(0ms);
  EXPECT_EQ(code_of(validate(bad)), supervision_errc::invalid_shutdown);
  bad = good;
  bad.backoff = make_backoff(100ms, 50ms);
  EXPECT_EQ(code_of(validate(bad)), supervision_errc::invalid_backoff);
  bad.backoff = make_backoff(100ms, 1s, 0.5);
  EXPECT_EQ(code_of(validate(bad)), supervision_errc::invalid_backoff);
  bad.backoff = make_backoff(100ms, 1s, 2, 1.5);
  EXPECT_EQ(code_of(validate(bad)), supervision_errc::invalid_backoff);
  supervisor_flags flags;
  flags.intensity = -1;
  EXPECT_EQ(code_of(validate(flags)), supervision_errc::invalid_flags);
  flags.intensity = 1;
  flags.period = 0ms;
  EXPECT_EQ(code_of(validate(flags)), supervision_errc::invalid_flags);
  EXPECT_NE(describe(validate(flags)).find("period"), std::string::npos);
}

TEST(backoff_policy, grows_exponentially_with_jitter_and_a_cap) {
  auto b = make_backoff(100ms, 1s, 2.0, 0.0);
  EXPECT_EQ(b.delay(1, 0.5), 100ms);
  EXPECT_EQ(b.delay(2, 0.5), 200ms);
  EXPECT_EQ(b.delay(4, 0.5), 800ms);
  EXPECT_EQ(b.delay(5, 0.5), 1000ms);
  EXPECT_EQ(b.delay(50, 0.5), 1000ms);
  b.jitter = 0.2;
  EXPECT_EQ(b.delay(1, 0.0), 80ms);
  EXPECT_EQ(b.delay(1, 0.5), 100ms);
  EXPECT_EQ(b.delay(1, 1.0), 120ms);
}

TEST_F(control, a_bad_spec_or_a_failing_start_ends_the_supervisor_with_that_error) {
  auto j = std::make_shared<journal>();
  auto bad = worker_spec(j, "b");
  bad.start = nullptr;
  auto sup = spawn_supervisor(sys(), one_for_one(), {worker_spec(j, "a"), bad});
  auto down = watch(sup);
  run();
  ASSERT_TRUE(down->has_value());
  EXPECT_EQ(code_of(**down), supervision_errc::invalid_start);
  EXPECT_EQ(j->stops, (std::vector<std::string>{"a"})) << "started children are stopped again";

  auto j2 = std::make_shared<journal>();
  j2->starts["b"] = 1; // b's start refuses from now on
  auto sup2 = spawn_supervisor(
    sys(), one_for_one(), {worker_spec(j2, "a"), worker_spec(j2, "b", restart_type::permanent, {.fail_start_after = 1})});
  auto down2 = watch(sup2);
  run();
  ASSERT_TRUE(down2->has_value());
  EXPECT_EQ(code_of(**down2), supervision_errc::start_failed);
  EXPECT_NE(describe(**down2).find("refused"), std::string::npos) << describe(**down2);
  EXPECT_EQ(j2->stops, (std::vector<std::string>{"a"}));

  auto j3 = std::make_shared<journal>();
  auto dup = spawn_supervisor(sys(), one_for_one(), {worker_spec(j3, "a"), worker_spec(j3, "a")});
  auto down3 = watch(dup);
  run();
  ASSERT_TRUE(down3->has_value());
  EXPECT_EQ(code_of(**down3), supervision_errc::duplicate_child_id);
}

TEST_F(control, start_terminate_restart_delete) {
  auto j = std::make_shared<journal>();
  auto sup = spawn_sup(one_for_one(), {worker_spec(j, "a")});
  auto b = call<caf::actor>(sup, start_child_atom::value, worker_spec(j, "b"));
  ASSERT_TRUE(b);
  EXPECT_EQ(ping(*b), "b");
  auto dup = call<caf::actor>(sup, start_child_atom::value, worker_spec(j, "b"));
  EXPECT_EQ(code_of(dup.error()), supervision_errc::duplicate_child_id);
  auto bad = worker_spec(j, "");
  EXPECT_EQ(code_of(call<caf::actor>(sup, start_child_atom::value, bad).error()), supervision_errc::invalid_child_id);
  EXPECT_EQ(code_of(call<caf::actor>(sup, start_child_atom::value, caf::make_message(std::string{"x"})).error()),
            supervision_errc::wrong_strategy);

  EXPECT_EQ(code_of(call<caf::unit_t>(sup, delete_child_atom::value, std::string{"b"}).error()),
            supervision_errc::child_running);
  ASSERT_TRUE(call<caf::unit_t>(sup, terminate_child_atom::value, std::string{"b"}));
  EXPECT_EQ(ping(*b), "dead");
  EXPECT_EQ(j->starts["b"], 1) << "terminate_child does not restart";
  auto kids = children(sup);
  ASSERT_EQ(kids.size(), 2u);
  EXPECT_EQ(kids[1].id, "b");
  EXPECT_FALSE(kids[1].actor);

  auto again = call<caf::actor>(sup, restart_child_atom::value, std::string{"b"});
  ASSERT_TRUE(again);
  EXPECT_EQ(ping(*again), "b");
  EXPECT_EQ(code_of(call<caf::actor>(sup, restart_child_atom::value, std::string{"b"}).error()),
            supervision_errc::child_running);
  ASSERT_TRUE(call<caf::unit_t>(sup, terminate_child_atom::value, std::string{"b"}));
  ASSERT_TRUE(call<caf::unit_t>(sup, delete_child_atom::value, std::string{"b"}));
  EXPECT_EQ(children(sup).size(), 1u);
  EXPECT_EQ(code_of(call<caf::unit_t>(sup, terminate_child_atom::value, std::string{"nobody"}).error()),
            supervision_errc::child_not_found);
  auto counts = call<child_counts>(sup, count_children_atom::value);
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->specs, 1u);
  EXPECT_EQ(counts->active, 1u);
  EXPECT_EQ(counts->workers, 1u);
  EXPECT_EQ(counts->supervisors, 0u);
}

TEST_F(control, dynamic_children_start_with_arguments_and_terminate_by_handle) {
  auto j = std::make_shared<journal>();
  supervisor_flags f = one_for_one();
  f.how = strategy::simple_one_for_one;
  auto sup = spawn_sup(f, {worker_spec(j, "account", restart_type::transient)});
  std::vector<caf::actor> kids;
  for (int i = 0; i < 50; ++i) {
    auto k = call<caf::actor>(sup, start_child_atom::value, caf::make_message("account-" + std::to_string(i)));
    ASSERT_TRUE(k);
    kids.push_back(*k);
  }
  EXPECT_EQ(ping(kids[7]), "account-7");
  EXPECT_EQ(code_of(call<caf::actor>(sup, start_child_atom::value, worker_spec(j, "x")).error()),
            supervision_errc::wrong_strategy);
  ASSERT_TRUE(call<caf::unit_t>(sup, terminate_child_atom::value, kids[3]));
  EXPECT_EQ(ping(kids[3]), "dead");
  send_exit_kind(kids[4], exit_kind::normal); // transient, normal exit: gone for good
  send_exit_kind(kids[5], exit_kind::crash);  // restarted with the same arguments
  EXPECT_EQ(j->starts["account-5"], 2);
  auto counts = call<child_counts>(sup, count_children_atom::value);
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->active, 48u);
  EXPECT_EQ(counts->specs, 48u);
}

TEST_F(control, the_tree_prints_names_ids_and_restart_counts) {
  auto j = std::make_shared<journal>();
  supervisor_flags inner = one_for_one();
  inner.name = "accounts";
  inner.how = strategy::simple_one_for_one;
  child_spec sub;
  sub.id = "accounts";
  sub.type = child_type::supervisor;
  sub.start = supervisor_start(inner, {worker_spec(j, "account")});
  auto sup = spawn_sup(one_for_one(), {worker_spec(j, "store"), sub, worker_spec(j, "gateway")});
  send_exit_kind(j->current["gateway"], exit_kind::crash);
  auto accounts = children(sup)[1].actor;
  ASSERT_TRUE(call<caf::actor>(accounts, start_child_atom::value, caf::make_message(std::string{"acc-1"})));
  auto tree = call<std::string>(sup, tree_atom::value);
  ASSERT_TRUE(tree);
  EXPECT_EQ(*tree, "root (one_for_one, intensity 10 in 5000 ms)\n"
                   "├── store [worker, permanent] restarts=0 running\n"
                   "├── accounts [supervisor, permanent] restarts=0 running\n"
                   "│   └── 1 dynamic children of 'account', 1 running, 0 restarts\n"
                   "└── gateway [worker, permanent] restarts=1 running\n");
}

TEST_F(control, a_child_supervisor_that_gives_up_is_restarted_by_its_parent) {
  auto j = std::make_shared<journal>();
  supervisor_flags inner = one_for_one(/*intensity*/ 0);
  inner.name = "inner";
  child_spec sub;
  sub.id = "inner";
  sub.type = child_type::supervisor;
  sub.start = supervisor_start(inner, {worker_spec(j, "x")});
  auto sup = spawn_sup(one_for_one(), {sub});
  auto inner_before = children(sup)[0].actor;
  send_exit_kind(j->current["x"], exit_kind::crash); // inner gives up at once
  auto kids = children(sup);
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_NE(kids[0].actor, inner_before);
  EXPECT_EQ(kids[0].restarts, 1u);
  EXPECT_EQ(j->starts["x"], 2);
  EXPECT_EQ(ping(j->current["x"]), "x");
}

TEST_F(control, backoff_delays_restarts_on_the_clock) {
  auto j = std::make_shared<journal>();
  auto spec = worker_spec(j, "db");
  spec.backoff = make_backoff(100ms, 400ms, 2.0, 0.0);
  auto sup = spawn_sup(one_for_one(100), {spec});
  std::vector<std::chrono::milliseconds> waits = {100ms, 200ms, 400ms, 400ms};
  for (size_t i = 0; i < waits.size(); ++i) {
    send_exit_kind(j->current["db"], exit_kind::crash);
    EXPECT_EQ(j->starts["db"], static_cast<int>(i + 1)) << "restarted before its delay";
    advance(waits[i] - 1ms);
    EXPECT_EQ(j->starts["db"], static_cast<int>(i + 1)) << "restart " << i + 1;
    advance(1ms);
    EXPECT_EQ(j->starts["db"], static_cast<int>(i + 2)) << "restart " << i + 1;
  }
  // After running stable for `max`, the count starts over.
  advance(400ms);
  send_exit_kind(j->current["db"], exit_kind::crash);
  advance(100ms);
  EXPECT_EQ(j->starts["db"], 6);
  // A shutdown during a backoff wait does not wait for it.
  send_exit_kind(j->current["db"], exit_kind::crash);
  auto down = watch(sup);
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  run();
  EXPECT_TRUE(down->has_value());
  EXPECT_EQ(j->starts["db"], 6);
}

TEST_F(control, auto_shutdown_any_and_all_significant) {
  for (auto mode : {auto_shutdown::any_significant, auto_shutdown::all_significant}) {
    auto j = std::make_shared<journal>();
    supervisor_flags f = one_for_one();
    f.shutdown = mode;
    auto s1 = worker_spec(j, "job1", restart_type::transient);
    s1.significant = true;
    auto s2 = worker_spec(j, "job2", restart_type::temporary);
    s2.significant = true;
    auto sup = spawn_sup(f, {s1, s2, worker_spec(j, "helper")});
    auto down = watch(sup);
    send_exit_kind(j->current["job1"], exit_kind::normal);
    EXPECT_EQ(down->has_value(), mode == auto_shutdown::any_significant);
    send_exit_kind(j->current["job2"], exit_kind::normal);
    ASSERT_TRUE(down->has_value());
    EXPECT_EQ(**down, caf::exit_reason::user_shutdown);
    EXPECT_EQ(ping(j->current["helper"]), "dead");
  }
}

TEST_F(control, requests_wait_while_siblings_are_being_stopped) {
  auto j = std::make_shared<journal>();
  supervisor_flags f = one_for_one();
  f.how = strategy::one_for_all;
  auto slow = worker_spec(j, "slow", restart_type::permanent, {.ignore_shutdown = true});
  slow.shutdown = shutdown_policy::timeout(1s);
  auto sup = spawn_sup(f, {worker_spec(j, "a"), slow});
  send_exit_kind(j->current["a"], exit_kind::crash); // one_for_all: stopping "slow" takes 1 s
  auto answered = std::make_shared<bool>(false);
  sys().spawn([=](caf::event_based_actor* self) {
    self->request(sup, caf::infinite, start_child_atom::value, worker_spec(j, "late"))
      .then([=](caf::actor&) { *answered = true; }, [](caf::error&) {});
  });
  run();
  EXPECT_FALSE(*answered);
  advance(1s);
  EXPECT_TRUE(*answered);
  EXPECT_EQ(j->starts["a"], 2);
  EXPECT_EQ(j->starts["slow"], 2);
  EXPECT_EQ(children(sup).size(), 3u);
}

} // namespace

TEST_F(control, the_observer_hears_terminations_restarts_and_giving_up) {
  auto j = std::make_shared<journal>();
  auto reports = std::make_shared<std::vector<supervisor_report>>();
  auto flags = one_for_one(/*intensity*/ 1);
  flags.observer = [reports](const supervisor_report& r) { reports->push_back(r); };
  auto sup = spawn_sup(flags, {worker_spec(j, "w")});
  send_exit_kind(j->current["w"], exit_kind::crash);
  ASSERT_EQ(reports->size(), 2u);
  EXPECT_EQ((*reports)[0].what, supervisor_report::kind::child_terminated);
  EXPECT_EQ((*reports)[0].supervisor, "root");
  EXPECT_EQ((*reports)[0].child, "w");
  EXPECT_FALSE((*reports)[0].reason.empty());
  EXPECT_EQ((*reports)[1].what, supervisor_report::kind::child_restarted);
  send_exit_kind(j->current["w"], exit_kind::crash); // the second within the period: give up
  ASSERT_EQ(reports->size(), 4u);
  EXPECT_EQ((*reports)[2].what, supervisor_report::kind::child_terminated);
  EXPECT_EQ((*reports)[3].what, supervisor_report::kind::shutdown);
  EXPECT_NE((*reports)[3].reason.find("restarts"), std::string::npos);
}
