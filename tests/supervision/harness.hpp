#pragma once

// A deterministic world for supervisor tests: CAF's test_coordinator runs
// every actor on the test thread and its clock moves only when told.

#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <gtest/gtest.h>

#include "sourcery/supervision/supervisor.hpp"

namespace sourcery::testing {

using ping_atom = caf::atom_constant<caf::atom("ping")>;
using crash_atom = caf::atom_constant<caf::atom("crash")>;
using quit_atom = caf::atom_constant<caf::atom("quit")>;

/// What the test workers report: how often each id started, and the order
/// in which workers that log their termination ended.
struct journal {
  std::mutex mtx; // workers log their end from their own threads on a real scheduler
  std::map<std::string, int> starts;
  std::vector<std::string> stops;
  std::map<std::string, caf::actor> current;
};

enum class exit_kind { normal, shutdown, crash, kill };

inline std::string to_string(exit_kind k) {
  switch (k) {
    case exit_kind::normal: return "normal";
    case exit_kind::shutdown: return "shutdown";
    case exit_kind::crash: return "crash";
    case exit_kind::kill: return "kill";
  }
  return "?";
}

struct worker_options {
  bool ignore_shutdown = false; ///< traps exits and ignores shutdown requests
  int fail_start_after = -1;     ///< start fails once this many starts happened (-1: never)
};

/// A worker: answers ping with its id, crashes (throws) on crash, quits on
/// (quit, normal|shutdown). It logs its termination into the journal.
inline supervision::start_function worker(std::shared_ptr<journal> j, std::string id, worker_options opts = {}) {
  return [j, id, opts](caf::actor_system& sys, const caf::message& args) -> caf::expected<caf::actor> {
    std::string name = id;
    if (args.size() == 1 && args.match_element<std::string>(0))
      name = args.get_as<std::string>(0);
    std::unique_lock lock{j->mtx};
    if (opts.fail_start_after >= 0 && j->starts[name] >= opts.fail_start_after)
      return caf::make_error(caf::sec::runtime_error, "start of " + name + " refused");
    ++j->starts[name];
    lock.unlock();
    auto a = sys.spawn([j, name, opts](caf::event_based_actor* self) -> caf::behavior {
      self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr&) -> caf::error {
        return caf::make_error(caf::sec::runtime_error, "worker crashed");
      });
      self->attach_functor([j, name] {
        std::lock_guard guard{j->mtx};
        j->stops.push_back(name);
      });
      if (opts.ignore_shutdown)
        self->set_exit_handler([](caf::exit_msg&) {});
      return {
        [name](ping_atom) { return name; },
        [](crash_atom) -> std::string { throw std::runtime_error("crash on purpose"); },
        [self](quit_atom, bool shutdown) {
          self->quit(shutdown ? caf::error{caf::exit_reason::user_shutdown} : caf::error{});
        },
      };
    });
    std::lock_guard guard{j->mtx};
    j->current[name] = a;
    return caf::actor{a};
  };
}

inline supervision::child_spec worker_spec(std::shared_ptr<journal> j, std::string id,
                                           supervision::restart_type restart = supervision::restart_type::permanent,
                                           worker_options opts = {}) {
  supervision::child_spec spec;
  spec.id = id;
  spec.start = worker(j, id, opts);
  spec.restart = restart;
  return spec;
}

class world : public ::testing::Test {
protected:
  world() {
    cfg_.set("scheduler.policy", caf::atom("testing"));
    cfg_.set("logger.verbosity", caf::atom("quiet"));
    sys_ = std::make_unique<caf::actor_system>(cfg_);
    sched_ = &dynamic_cast<caf::scheduler::test_coordinator&>(sys_->scheduler());
  }

  ~world() override {
    // Kill anything left so the system can shut down.
    for (auto& a : kill_on_exit_)
      caf::anon_send_exit(a, caf::exit_reason::kill);
    sched_->run();
  }

  caf::actor_system& sys() { return *sys_; }
  void run() { sched_->run(); }
  void advance(caf::timespan t) {
    sched_->advance_time(t);
    run();
  }

  /// Sends a request from a fresh actor and runs until it is answered.
  /// `call<caf::unit_t>` expects an empty answer (a delivered `caf::unit`).
  template <class T, class... Ts>
  caf::expected<T> call(const caf::actor& dest, Ts... xs) {
    auto result = std::make_shared<std::optional<caf::expected<T>>>();
    sys_->spawn([=](caf::event_based_actor* self) {
      if constexpr (std::is_same_v<T, caf::unit_t>)
        self->request(dest, caf::infinite, xs...)
          .then([=]() { *result = caf::unit; }, [=](caf::error& e) { *result = std::move(e); });
      else
        self->request(dest, caf::infinite, xs...)
          .then([=](T& x) { *result = std::move(x); }, [=](caf::error& e) { *result = std::move(e); });
    });
    run();
    if (!*result)
      return caf::make_error(caf::sec::request_timeout, "no answer (still pending)");
    return std::move(**result);
  }

  caf::actor spawn_sup(supervision::supervisor_flags flags, std::vector<supervision::child_spec> specs) {
    auto s = supervision::spawn_supervisor(*sys_, std::move(flags), std::move(specs));
    kill_on_exit_.push_back(s);
    run();
    return s;
  }

  /// Watches `who` and records its exit reason.
  std::shared_ptr<std::optional<caf::error>> watch(const caf::actor& who) {
    auto reason = std::make_shared<std::optional<caf::error>>();
    // Keep a handle: CAF terminates an actor nobody references.
    kill_on_exit_.push_back(sys_->spawn([=](caf::event_based_actor* self) -> caf::behavior {
      self->monitor(who);
      self->set_down_handler([=](caf::down_msg& m) {
        *reason = m.reason;
        self->quit();
      });
      return {[](ping_atom) {}}; // stays alive until the down message
    }));
    run();
    return reason;
  }

  /// The worker's answer to ping, or "dead".
  std::string ping(const caf::actor& worker) {
    auto r = call<std::string>(worker, ping_atom::value);
    return r ? *r : std::string{"dead"};
  }

  std::vector<supervision::child_info> children(const caf::actor& sup) {
    auto r = call<std::vector<supervision::child_info>>(sup, supervision::which_children_atom::value);
    EXPECT_TRUE(r);
    return r ? *r : std::vector<supervision::child_info>{};
  }

  void send_exit_kind(const caf::actor& worker, exit_kind kind) {
    switch (kind) {
      case exit_kind::normal: caf::anon_send(worker, quit_atom::value, false); break;
      case exit_kind::shutdown: caf::anon_send(worker, quit_atom::value, true); break;
      case exit_kind::crash: caf::anon_send(worker, crash_atom::value); break;
      case exit_kind::kill: caf::anon_send_exit(worker, caf::exit_reason::kill); break;
    }
    run();
  }

  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  caf::scheduler::test_coordinator* sched_ = nullptr;
  std::vector<caf::actor> kill_on_exit_;
};

} // namespace sourcery::testing
