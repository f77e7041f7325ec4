#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace sourcery::bench {

/// Prints one result as a JSON line: {"suite":…,"name":…,"value":…,"unit":…}.
inline void report(const std::string& suite, const std::string& name, double value, const std::string& unit) {
  std::printf("{\"suite\":\"%s\",\"name\":\"%s\",\"value\":%.3f,\"unit\":\"%s\"}\n", suite.c_str(),
              name.c_str(), value, unit.c_str());
  std::fflush(stdout);
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
};

int run_store_suite(const options& opts);
int run_supervision_suite(const options& opts);
int run_dispatch_suite(const options& opts);
int run_handlers_suite(const options& opts);
int run_http_suite(const options& opts);

} // namespace sourcery::bench
