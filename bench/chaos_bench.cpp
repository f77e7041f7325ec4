// The chaos suite: `sourcery-bench chaos --store URI [--seconds N]` runs
// three bank-node processes (beside this program) as one cluster in a
// schema of its own on the server of URI, under load, through random faults
// one at a time (tests/support/bank_chaos.hpp), for N seconds (60 by
// default). It prints each fault and the checkers' verdicts, one JSON
// object per line:
//
//   fault_recovery_seconds (one line per fault, with "fault": what it was),
//   chaos_faults, chaos_unfaulted_ok_share (commands answered OK for accounts
//   whose owner was not faulted; ≥ 0.99), chaos_worst_recovery_seconds
//   (≤ 5), chaos_acknowledged, chaos_lost, chaos_duplicated,
//   chaos_version_gaps, chaos_money_difference, chaos_checkpoint_backwards,
//   chaos_node_exits, chaos_deadlocks, chaos_batches_checked (fenced batches
//   ordered against their writer's lease changes by commit time; -1 when the
//   server keeps no commit timestamps), chaos_late_commits (0),
//   chaos_passed (1 or 0).
//
// Faults on the server (freeze, crash and restart) need it on this machine
// and this program run as its owner or root; link cuts need root and a
// server reached over a unix socket. What cannot be caused is left out and
// said on stderr. Exit status 0 when every verdict holds, 1 otherwise.
// --pressure adds CPU and disk pressure for the whole run: a busy loop per
// core and a thread writing and fsyncing a file.

#include <filesystem>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "../tests/support/bank_chaos.hpp"
#include "bench.hpp"
#include "sourcery/persistence/store_uri.hpp"

namespace sourcery::bench {

namespace {

void line(const std::string& name, double value, const std::string& unit, const nlohmann::json& extra = {}) {
  nlohmann::json j{{"suite", "chaos"}, {"name", name}, {"value", value}, {"unit", unit}};
  if (extra.is_object())
    j.update(extra);
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

} // namespace

int run_chaos_suite(const options& opts) {
  auto uri = persistence::store_uri::parse(opts.store);
  if (!uri || !uri->is_postgres()) {
    std::fprintf(stderr, "sourcery-bench: the chaos suite needs --store postgresql://...\n");
    return 2;
  }
  auto self = std::filesystem::read_symlink("/proc/self/exe");
  auto node = self.parent_path() / "bank-node";
  if (!std::filesystem::exists(node)) {
    std::fprintf(stderr, "sourcery-bench: the chaos suite runs %s, which is not built\n", node.c_str());
    return 1;
  }
  auto work = std::filesystem::path{opts.dir} / ("chaos-" + std::to_string(::getpid()));
  std::filesystem::create_directories(work);
  testing::chaos_settings s;
  s.server = uri->location;
  s.schema = "bench_chaos_" + std::to_string(::getpid());
  s.bank_node = node.string();
  s.work_dir = work.string();
  s.duration = std::chrono::seconds{opts.seconds > 0 ? opts.seconds : 60};
  s.seed = static_cast<unsigned>(std::random_device{}());
  s.pressure = opts.pressure;
  s.say = [](const std::string& text) { std::fprintf(stderr, "sourcery-bench chaos: %s\n", text.c_str()); };
  std::fprintf(stderr, "sourcery-bench chaos: seed %u, %lld s, node logs in %s\n", s.seed,
               static_cast<long long>(s.duration.count()), work.c_str());
  testing::chaos_report r;
  {
    testing::bank_chaos run{s};
    r = run.run();
  }
  for (auto& f : r.faults)
    line("fault_recovery_seconds", f.recovery_seconds, "s",
         {{"fault", f.what}, {"unfaulted_ok", f.unfaulted_ok}, {"unfaulted_total", f.unfaulted_total}});
  line("chaos_faults", static_cast<double>(r.faults.size()), "faults");
  line("chaos_unfaulted_ok_share", r.unfaulted_ok_share(), "ratio");
  line("chaos_worst_recovery_seconds", r.worst_recovery_seconds, "s");
  line("chaos_acknowledged", static_cast<double>(r.acknowledged), "commands");
  line("chaos_lost", r.lost, "commands");
  line("chaos_duplicated", r.duplicated, "commands");
  line("chaos_version_gaps", r.version_gaps, "events");
  line("chaos_money_difference", static_cast<double>(r.money_held - r.money_deposited), "units");
  line("chaos_checkpoint_backwards", r.checkpoint_backwards, "moves");
  line("chaos_node_exits", r.node_exits, "nodes");
  line("chaos_deadlocks", r.deadlocks, "lines");
  line("chaos_batches_checked", r.batches_checked, "batches", {{"handed_over", r.batches_handed_over}});
  line("chaos_late_commits", static_cast<double>(r.late_commits.size()), "batches");
  for (auto& l : r.late_commits)
    std::fprintf(stderr, "sourcery-bench chaos: late commit: %s\n", l.c_str());
  line("chaos_passed", r.passed() ? 1 : 0, "bool");
  for (auto& p : r.problems)
    std::fprintf(stderr, "sourcery-bench chaos: %s\n", p.c_str());
  PGconn* pg = PQconnectdb(uri->location.c_str());
  PQsetNoticeProcessor(pg, [](void*, const char*) {}, nullptr);
  PQclear(PQexec(pg, ("DROP SCHEMA IF EXISTS \"" + s.schema + "\" CASCADE").c_str()));
  PQfinish(pg);
  if (r.passed() && !std::getenv("CHAOS_KEEP")) // CHAOS_KEEP=1 keeps the nodes' logs of a run that passed
    std::filesystem::remove_all(work);
  return r.passed() ? 0 : 1;
}

} // namespace sourcery::bench
