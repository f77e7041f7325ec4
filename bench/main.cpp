// sourcery-bench SUITE [--dir DIR] [--store URI] [--scale X] [--seconds N] [--pressure]
// Prints one JSON object per line: {"suite","name","value","unit"}.
// BENCH_ONLY=NAME runs one workload alone, for profiling: append_1, append_16 or
// append_256 (or reads) of the store suite, w1, w4 or w5 of the dispatch suite, w2, w3 or
// catchup of the handlers suite; w1, failover or handoff of the cluster suite
// (which needs --store postgresql://...);
// BENCH_NOSYNC=1 runs the store suite without flushes, to see its CPU path alone.

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>

#include "bench.hpp"
#include "sourcery/runtime/cli/program_options.hpp"

int main(int argc, char** argv) {
  using namespace sourcery::bench;
  const std::map<std::string, std::function<int(const options&)>> suites = {
    {"store", run_store_suite},
    {"supervision", run_supervision_suite},
    {"dispatch", run_dispatch_suite},
    {"handlers", run_handlers_suite},
    {"http", run_http_suite},
    {"cluster", run_cluster_suite},
    {"chaos", run_chaos_suite},
  };
  options opts;
  opts.dir = (std::filesystem::temp_directory_path() / "sourcery-bench").string();
  std::string suite_name;
  std::vector<std::string> names;
  for (auto& [name, _] : suites)
    names.push_back(name);
  CLI::App cli{"Sourcery's benchmarks: one JSON object per line {\"suite\", \"name\", \"value\", \"unit\"}.",
               "sourcery-bench"};
  cli.add_option("SUITE", suite_name, "the suite to run")->required()->check(CLI::IsMember(names));
  cli.add_option("--dir", opts.dir, "directory for on-disk stores (a fresh subdirectory per run)")
    ->capture_default_str();
  cli.add_option("--store", opts.store, "lmdb:DIR, or postgresql://... for the store, dispatch, cluster and chaos suites")
    ->type_name("URI");
  cli.add_option("--scale", opts.scale, "scales run lengths (1: the documented workloads)")
    ->check(CLI::PositiveNumber)
    ->capture_default_str();
  cli.add_option("--seconds", opts.seconds, "how long the chaos suite runs (default 60)")->check(CLI::PositiveNumber);
  cli.add_flag("--pressure", opts.pressure, "the chaos suite runs under CPU and disk pressure");
  if (auto code = sourcery::cli::parse(cli, argc, argv))
    return *code;
  auto suite = suites.find(suite_name);
  // --store lmdb:DIR is --dir DIR; only the store and dispatch suites run on
  // PostgreSQL (pg_ metrics), the others say so rather than run on LMDB.
  if (opts.store.rfind("lmdb:", 0) == 0) {
    opts.dir = opts.store.substr(5);
    opts.store.clear();
  } else if (!opts.store.empty() && opts.store.rfind("postgres", 0) != 0) {
    std::fprintf(stderr, "sourcery-bench: --store takes lmdb:DIR or postgresql://...\n");
    return 1;
  } else if (!opts.store.empty() && suite->first != "store" && suite->first != "dispatch"
             && suite->first != "cluster" && suite->first != "chaos") {
    std::fprintf(stderr, "sourcery-bench: the %s suite runs on LMDB only; --store postgresql:// is for the store,"
                         " dispatch, cluster and chaos suites\n", suite->first.c_str());
    return 2;
  }
  return suite->second(opts);
}
