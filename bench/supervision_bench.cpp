// Supervision: restart latency from crash to serving again, and starting,
// stopping and holding 100,000 simple_one_for_one children.

#include <algorithm>
#include <fstream>
#include <thread>
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>

#include "stats.hpp"
#include "bench.hpp"
#include "sourcery/supervision/supervisor.hpp"

namespace sourcery::bench {

namespace {

using namespace sourcery::supervision;
using ready_atom = caf::atom_constant<caf::atom("ready")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using crash_atom = caf::atom_constant<caf::atom("crash")>;
using go_atom = caf::atom_constant<caf::atom("go")>;

/// Resident set size in bytes.
size_t rss_bytes() {
  std::ifstream statm{"/proc/self/statm"};
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

using sourcery::bench::percentile;

/// A worker that tells `driver` it is up, answers ping, and crashes on crash.
caf::behavior worker(caf::event_based_actor* self, caf::actor driver) {
  self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr&) -> caf::error {
    return caf::make_error(caf::sec::runtime_error, "crash");
  });
  self->send(driver, ready_atom::value, caf::actor{self});
  return {
    [](ping_atom) { return ping_atom::value; },
    [](crash_atom) -> ping_atom { throw std::runtime_error("crash on purpose"); },
  };
}

/// An idle dynamic child: the smallest useful actor.
caf::behavior idle_child(caf::event_based_actor*) {
  return {[](ping_atom) { return ping_atom::value; }};
}

void restart_latency(caf::actor_system& sys, int rounds) {
  auto samples = std::make_shared<std::vector<double>>();
  samples->reserve(static_cast<size_t>(rounds));
  caf::scoped_actor waiter{sys};
  auto waiter_handle = caf::actor{waiter};
  auto driver = sys.spawn([=](caf::event_based_actor* self) -> caf::behavior {
    auto t0 = std::make_shared<std::chrono::steady_clock::time_point>();
    auto left = std::make_shared<int>(rounds + 1); // the first ready is the initial start
    return {
      [=](ready_atom, caf::actor child) {
        self->request(child, std::chrono::seconds{5}, ping_atom::value)
          .then(
            [=](ping_atom) {
              if (*left < rounds + 1)
                samples->push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - *t0).count());
              if (--*left == 0) {
                self->send(waiter_handle, go_atom::value);
                return;
              }
              *t0 = std::chrono::steady_clock::now();
              self->send(child, crash_atom::value);
            },
            [](caf::error&) {});
      },
    };
  });
  supervisor_flags f;
  f.name = "bench";
  f.intensity = rounds * 2;
  f.period = std::chrono::seconds{1};
  child_spec spec;
  spec.id = "worker";
  spec.start = [driver](caf::actor_system& s, const caf::message&) -> caf::expected<caf::actor> {
    return caf::actor{s.spawn(worker, driver)};
  };
  auto sup = supervisor::start(sys, f, {spec});
  if (!sup) {
    std::fprintf(stderr, "%s\n", sourcery::supervision::describe(sup.error()).c_str());
    std::exit(1);
  }
  waiter->receive([](go_atom) {});
  report("supervision", "restart_latency_p50", percentile(*samples, 0.50), "us");
  report("supervision", "restart_latency_p99", percentile(*samples, 0.99), "us");
  sup->stop();
  caf::anon_send_exit(driver, caf::exit_reason::user_shutdown);
}

/// Starts `n` dynamic children and stops them. With `measure_memory` it
/// reports the heap per child instead of the times (run in its own process,
/// with one malloc arena so that the heap counters see every thread).
void hundred_thousand_children(caf::actor_system& sys, int n, bool measure_memory) {
  supervisor_flags f;
  f.name = "accounts";
  f.how = strategy::simple_one_for_one;
  child_spec tmpl;
  tmpl.id = "account";
  tmpl.restart = restart_type::temporary;
  tmpl.shutdown = shutdown_policy::brutal_kill();
  tmpl.start = [](caf::actor_system& s, const caf::message&) -> caf::expected<caf::actor> {
    return caf::actor{s.spawn<caf::lazy_init>(idle_child)};
  };
  auto sup = supervisor::start(sys, f, {tmpl});
  if (!sup)
    std::exit(1);
  caf::scoped_actor waiter{sys};
  auto waiter_handle = caf::actor{waiter};
  auto rss_before = rss_bytes();
  auto heap_before = heap_in_use();
  auto start = std::chrono::steady_clock::now();
  // One driver sends all start requests at once, as many callers would. It
  // sends rather than requests: CAF keeps the handlers of pending requests in
  // a list, so 100,000 outstanding `request().then()` would measure that list.
  sys.spawn([=](caf::event_based_actor* self) -> caf::behavior {
    auto left = std::make_shared<int>(n);
    for (int i = 0; i < n; ++i)
      self->send(sup->handle(), start_child_atom::value, caf::make_message(i));
    return {
      [=](caf::actor&) {
        if (--*left == 0) {
          self->send(waiter_handle, go_atom::value);
          self->quit();
        }
      },
      [](caf::error& e) {
        std::fprintf(stderr, "start failed: %s\n", sourcery::supervision::describe(e).c_str());
        std::exit(1);
      },
    };
  });
  waiter->receive([](go_atom) {});
  double start_s = seconds_since(start);
  auto rss_after = rss_bytes();
  auto heap_after = heap_in_use();
  auto counts = sup->count_children();
  if (!counts || counts->active != static_cast<size_t>(n)) {
    std::fprintf(stderr, "expected %d children\n", n);
    std::exit(1);
  }
  if (measure_memory) {
    // Live heap per idle child (the child actor, its monitor, and the
    // supervisor's record of it), and resident memory for comparison.
    report("supervision", "memory_per_child",
           static_cast<double>(heap_after > heap_before ? heap_after - heap_before : 0) / n, "bytes");
    report("supervision", "memory_per_child_rss",
           static_cast<double>(rss_after > rss_before ? rss_after - rss_before : 0) / n, "bytes");
    sup->stop();
    return;
  }
  report("supervision", "start_100k_children", start_s * 100'000.0 / n, "s");
  start = std::chrono::steady_clock::now();
  sup->stop();
  report("supervision", "stop_100k_children", seconds_since(start) * 100'000.0 / n, "s");
}

void call_roundtrip(caf::actor_system& sys, int n) {
  auto server = sys.spawn([](caf::event_based_actor*) -> caf::behavior { return {[](int x) { return x + 1; }}; });
  caf::scoped_actor waiter{sys};
  auto waiter_handle = caf::actor{waiter};
  auto start = std::chrono::steady_clock::now();
  sys.spawn([=](caf::event_based_actor* self) {
    auto left = std::make_shared<int>(n);
    auto next = std::make_shared<std::function<void()>>();
    *next = [=] {
      self->request(server, caf::infinite, 1).then([=](int) {
        if (--*left == 0)
          self->send(waiter_handle, go_atom::value);
        else
          (*next)();
      });
    };
    (*next)();
  });
  waiter->receive([](go_atom) {});
  report("supervision", "call_roundtrip", n / seconds_since(start), "calls/s");
  caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
}

caf::actor_system_config& configure(caf::actor_system_config& cfg) {
  cfg.set("logger.verbosity", caf::atom("quiet"));
  if (const char* p = std::getenv("SOURCERY_POLICY"))
    cfg.set("scheduler.policy", caf::atom_from_string(p));
  // One scheduler thread per core (as BEAM's schedulers); CAF's default of
  // max(cores, 4) makes two cores thrash in work stealing.
  cfg.set("scheduler.max-threads", static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  if (const char* t = std::getenv("SOURCERY_THREADS"))
    cfg.set("scheduler.max-threads", std::atoi(t));
  return cfg;
}

} // namespace

int run_supervision_suite(const options& opts) {
  const int n = static_cast<int>(100'000 * opts.scale);
  // Memory in a child process of its own: one malloc arena there, so the heap
  // counters are exact; the timings below run with the default arenas.
  std::fflush(stdout);
  pid_t pid = ::fork();
  if (pid == 0) {
    mallopt(M_ARENA_MAX, 1);
    caf::actor_system_config cfg;
    caf::actor_system sys{configure(cfg)};
    hundred_thousand_children(sys, n, true);
    std::fflush(stdout);
    std::_Exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  caf::actor_system_config cfg;
  caf::actor_system sys{configure(cfg)};
  restart_latency(sys, static_cast<int>(10'000 * opts.scale));
  hundred_thousand_children(sys, n, false);
  call_roundtrip(sys, static_cast<int>(200'000 * opts.scale));
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

} // namespace sourcery::bench
