#include "sourcery/supervision/supervisor.hpp"

#include <memory>
#include <optional>

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

#include "sourcery/supervision/detail/scoped_self.hpp"

#include "supervisor_actor.hpp"

namespace sourcery::supervision {

caf::actor spawn_supervisor(caf::actor_system& system, supervisor_flags flags, std::vector<child_spec> children) {
  return system.spawn<detail::supervisor_actor>(std::move(flags), std::move(children));
}

start_function supervisor_start(supervisor_flags flags, std::vector<child_spec> children) {
  return [flags = std::move(flags), children = std::move(children)](caf::actor_system& sys,
                                                                    const caf::message&) -> caf::expected<caf::actor> {
    return spawn_supervisor(sys, flags, children);
  };
}

namespace {

constexpr auto control_timeout = std::chrono::seconds{30};

// -- on CAF's deterministic scheduler -------------------------------------------------
//
// With `scheduler.policy = testing` no actor runs unless the test runs it,
// so a blocking request from the test's thread would wait forever. There,
// the calls below ask from an event-based actor and run the scheduler until
// the answer is in: a test drives an application as it drives any actor.

caf::scheduler::test_coordinator* testing_scheduler(caf::actor_system& sys) {
  return dynamic_cast<caf::scheduler::test_coordinator*>(&sys.scheduler());
}

/// Runs every job until `done()` (then true) or nothing is left to run.
template <class Done>
bool run_until(caf::scheduler::test_coordinator& sched, Done done) {
  while (!done())
    if (!sched.try_run_once())
      return done();
  return true;
}

caf::error still_pending() {
  return caf::make_error(caf::sec::request_timeout,
                         "no answer: the deterministic scheduler ran out of work (advance its clock?)");
}

template <class T, class... Ts>
caf::expected<T> ask_deterministic(caf::actor_system& sys, caf::scheduler::test_coordinator& sched,
                                   const caf::actor& dest, Ts&&... xs) {
  auto result = std::make_shared<std::optional<caf::expected<T>>>();
  sys.spawn([=, msg = caf::make_message(std::forward<Ts>(xs)...)](caf::event_based_actor* self) {
    if constexpr (std::is_same_v<T, caf::unit_t>)
      self->request(dest, caf::infinite, msg).then([=] { *result = caf::unit; },
                                                   [=](caf::error& e) { *result = std::move(e); });
    else
      self->request(dest, caf::infinite, msg).then([=](T& x) { *result = std::move(x); },
                                                   [=](caf::error& e) { *result = std::move(e); });
  });
  if (!run_until(sched, [&] { return result->has_value(); }))
    return still_pending();
  return std::move(**result);
}

/// Runs the scheduler until `who` has terminated; its exit reason.
std::optional<caf::error> await_down_deterministic(caf::actor_system& sys, caf::scheduler::test_coordinator& sched,
                                                   const caf::actor& who) {
  auto reason = std::make_shared<std::optional<caf::error>>();
  auto watcher = sys.spawn([=](caf::event_based_actor* self) -> caf::behavior {
    self->monitor(who);
    self->set_down_handler([=](caf::down_msg& m) {
      *reason = m.reason;
      self->quit();
    });
    return {[](caf::unit_t) {}};
  });
  run_until(sched, [&] { return reason->has_value(); });
  // Shutdown timeouts (a child given time to finish) fire on the test clock.
  while (!reason->has_value() && sched.trigger_timeouts() > 0)
    run_until(sched, [&] { return reason->has_value(); });
  if (!reason->has_value())
    caf::anon_send_exit(watcher, caf::exit_reason::kill);
  return *reason;
}

template <class T, class... Ts>
caf::expected<T> ask(caf::actor_system& sys, const caf::actor& dest, Ts&&... xs) {
  if (auto* sched = testing_scheduler(sys))
    return ask_deterministic<T>(sys, *sched, dest, std::forward<Ts>(xs)...);
  sourcery::detail::scoped_self self{sys};
  caf::expected<T> result = caf::error{};
  self->request(dest, control_timeout, std::forward<Ts>(xs)...)
    .receive([&](T& value) { result = std::move(value); }, [&](caf::error& err) { result = std::move(err); });
  return result;
}

/// For requests answered with `caf::unit`, which arrives as an empty message.
caf::expected<void> ask_unit(caf::actor_system& sys, const caf::actor& dest, auto&&... xs) {
  if (auto* sched = testing_scheduler(sys)) {
    auto r = ask_deterministic<caf::unit_t>(sys, *sched, dest, std::forward<decltype(xs)>(xs)...);
    if (!r)
      return r.error();
    return {};
  }
  sourcery::detail::scoped_self self{sys};
  caf::error failure;
  self->request(dest, control_timeout, std::forward<decltype(xs)>(xs)...)
    .receive([] {}, [&](caf::error& err) { failure = std::move(err); });
  if (failure)
    return failure;
  return {};
}

} // namespace

caf::expected<supervisor> supervisor::start(caf::actor_system& system, supervisor_flags flags,
                                            std::vector<child_spec> children) {
  auto handle = spawn_supervisor(system, std::move(flags), std::move(children));
  if (auto* sched = testing_scheduler(system)) {
    auto started = ask_deterministic<caf::unit_t>(system, *sched, handle, detail::started_atom::value);
    if (started)
      return supervisor{system, handle};
    auto down = await_down_deterministic(system, *sched, handle);
    return down && *down ? *down : started.error();
  }
  sourcery::detail::scoped_self self{system};
  self->monitor(handle);
  caf::error failure;
  self->request(handle, control_timeout, detail::started_atom::value)
    .receive([] {}, [&](caf::error& err) { failure = std::move(err); });
  if (!failure)
    return supervisor{system, handle};
  // The supervisor is stopping what it started; wait until it is gone. It
  // may have gone before our request arrived: its exit reason is the error.
  self->receive(
    [&](caf::down_msg& down) {
      if (failure == caf::sec::request_receiver_down && down.reason)
        failure = std::move(down.reason);
    },
    caf::after(control_timeout) >> [] {});
  return failure;
}

supervisor::supervisor(caf::actor_system& system, caf::actor handle) : system_(&system), handle_(std::move(handle)) {}

caf::expected<caf::actor> supervisor::start_child(child_spec spec) {
  return ask<caf::actor>(*system_, handle_, start_child_atom::value, std::move(spec));
}

caf::expected<caf::actor> supervisor::start_child(caf::message args) {
  return ask<caf::actor>(*system_, handle_, start_child_atom::value, std::move(args));
}

caf::expected<void> supervisor::terminate_child(const std::string& id) {
  return ask_unit(*system_, handle_, terminate_child_atom::value, id);
}

caf::expected<void> supervisor::terminate_child(const caf::actor& child) {
  return ask_unit(*system_, handle_, terminate_child_atom::value, child);
}

caf::expected<caf::actor> supervisor::restart_child(const std::string& id) {
  return ask<caf::actor>(*system_, handle_, restart_child_atom::value, id);
}

caf::expected<void> supervisor::delete_child(const std::string& id) {
  return ask_unit(*system_, handle_, delete_child_atom::value, id);
}

caf::expected<std::vector<child_info>> supervisor::which_children() {
  return ask<std::vector<child_info>>(*system_, handle_, which_children_atom::value);
}

caf::expected<child_counts> supervisor::count_children() {
  return ask<child_counts>(*system_, handle_, count_children_atom::value);
}

caf::expected<std::string> supervisor::tree() {
  return ask<std::string>(*system_, handle_, tree_atom::value);
}

void supervisor::stop(std::chrono::milliseconds timeout) {
  if (!handle_)
    return;
  if (auto* sched = testing_scheduler(*system_)) {
    caf::anon_send_exit(handle_, caf::exit_reason::user_shutdown);
    await_down_deterministic(*system_, *sched, handle_);
    handle_ = nullptr;
    return;
  }
  sourcery::detail::scoped_self self{*system_};
  self->monitor(handle_);
  self->send_exit(handle_, caf::exit_reason::user_shutdown);
  self->receive([](caf::down_msg&) {}, caf::after(timeout) >> [] {});
  handle_ = nullptr;
}

} // namespace sourcery::supervision
