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
  auto usage = [&] {
    std::fprintf(stderr, "usage: sourcery-bench SUITE [--dir DIR] [--store URI] [--scale X] [--seconds N] [--pressure]\nsuites:");
    for (auto& [name, _] : suites)
      std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  };
  if (argc < 2)
    return usage();
  options opts;
  opts.dir = (std::filesystem::temp_directory_path() / "sourcery-bench").string();
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      opts.dir = argv[++i];
    else if (std::strcmp(argv[i], "--store") == 0 && i + 1 < argc)
      opts.store = argv[++i];
    else if (std::strcmp(argv[i], "--scale") == 0 && i + 1 < argc)
      opts.scale = std::atof(argv[++i]);
    else if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc && std::atoi(argv[i + 1]) > 0)
      opts.seconds = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--pressure") == 0)
      opts.pressure = true;
    else
      return usage();
  }
  auto suite = suites.find(argv[1]);
  if (suite == suites.end() || opts.scale <= 0)
    return usage();
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
