#pragma once

#include <chrono>
#include <cstddef>
#include <malloc.h>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

// tcmalloc's C API, when the program is linked with it (see cmake/Allocator.cmake).
extern "C" int MallocExtension_GetNumericProperty(const char* property, size_t* value) __attribute__((weak));

namespace sourcery::bench {

/// Bytes of heap the program has allocated and not freed, whichever malloc
/// it runs on (tcmalloc's own count, else glibc's).
inline size_t heap_in_use() {
  size_t bytes = 0;
  if (MallocExtension_GetNumericProperty != nullptr
      && MallocExtension_GetNumericProperty("generic.current_allocated_bytes", &bytes) != 0)
    return bytes;
  return mallinfo2().uordblks;
}

/// Prints one result as a JSON line: {"suite":…,"name":…,"value":…,"unit":…}.
inline void report(const std::string& suite, const std::string& name, double value, const std::string& unit) {
  std::printf("{\"suite\":\"%s\",\"name\":\"%s\",\"value\":%.3f,\"unit\":\"%s\"}\n", suite.c_str(),
              name.c_str(), value, unit.c_str());
  std::fflush(stdout);
}

/// Whether BENCH_ONLY (workload names, comma-separated: to profile or
/// measure a few) leaves `workload` to run.
inline bool wanted(std::string_view workload) {
  const char* only = std::getenv("BENCH_ONLY");
  if (only == nullptr)
    return true;
  std::string_view list{only};
  while (!list.empty()) {
    auto comma = list.find(',');
    if (list.substr(0, comma) == workload)
      return true;
    if (comma == std::string_view::npos)
      break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Options shared by every suite.
struct options {
  /// Directory for on-disk stores (a fresh subdirectory per run).
  std::string dir;
  /// Scales run lengths (1.0 = the documented workloads).
  double scale = 1.0;
  /// `--store URI`: a postgresql:// URI runs the store and dispatch suites
  /// on PostgreSQL (metrics prefixed pg_), in a schema of their own that is
  /// dropped at the end. Empty: LMDB in `dir`.
  std::string store;
  /// `--seconds N`: how long the chaos suite runs (0: its default, 60).
  int seconds = 0;
  /// `--pressure`: the chaos suite runs under CPU and disk pressure.
  bool pressure = false;
};

/// The PostgreSQL store suite (store_bench_pg.cpp).
int run_pg_store_suite(const options& opts);

int run_store_suite(const options& opts);
int run_supervision_suite(const options& opts);
int run_dispatch_suite(const options& opts);
int run_handlers_suite(const options& opts);
int run_http_suite(const options& opts);
int run_cluster_suite(const options& opts);
int run_chaos_suite(const options& opts);

} // namespace sourcery::bench
