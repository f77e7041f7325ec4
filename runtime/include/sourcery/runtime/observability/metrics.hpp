#pragma once

// The counters of a running application, rendered in the Prometheus text
// exposition format (version 0.0.4). Updating them is a few relaxed atomic
// adds: they sit on the dispatch path.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "sourcery/runtime/commands/dispatch.hpp"
#include "sourcery/supervision/supervisor_flags.hpp"

namespace sourcery {

/// A cumulative latency histogram (Prometheus `histogram`).
class latency_histogram {
public:
  /// Upper bounds in seconds; the last bucket is +Inf.
  static constexpr std::array<double, 16> bounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
  void observe(std::chrono::nanoseconds took) noexcept;
  /// Appends `name`_bucket/_sum/_count lines (with `labels`, may be empty).
  void render(std::string& out, std::string_view name, std::string_view labels = {}) const;
  uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }

private:
  std::array<std::atomic<uint64_t>, bounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

class metrics {
public:
  /// A dispatch ended (any outcome), `took` after it began.
  void command_done(const caf::expected<dispatch_result>& r, std::chrono::nanoseconds took) noexcept;
  /// A supervisor's report: terminations and restarts, by supervisor.
  void supervisor_event(const supervision::supervisor_report& r);
  /// An HTTP request answered with `status`.
  void http_request(unsigned status, std::chrono::nanoseconds took) noexcept;

  /// Commands that ended with `outcome`: "accepted", "rejected", a
  /// dispatch_errc name ("timeout", …), or "error" (store and other errors).
  uint64_t commands(std::string_view outcome) const noexcept;
  uint64_t events_appended() const noexcept { return events_.load(std::memory_order_relaxed); }
  uint64_t restarts() const;

  /// Appends every metric in Prometheus text format.
  void render(std::string& out) const;

private:
  static constexpr size_t outcome_count = 12; // accepted, rejected, dispatch_errc (none..unavailable), error
  static std::string_view outcome_name(size_t i) noexcept;
  std::array<std::atomic<uint64_t>, outcome_count> outcomes_{};
  std::atomic<uint64_t> events_{0};
  latency_histogram dispatch_latency_;
  std::array<std::atomic<uint64_t>, 6> http_by_class_{}; // 1xx..5xx, index 0 unused
  latency_histogram http_latency_;
  mutable std::mutex sup_mtx_;
  std::map<std::string, std::pair<uint64_t, uint64_t>> supervisors_; // name -> (terminations, restarts)
};

/// A label value escaped as the Prometheus text format asks: backslash,
/// double quote and newline.
std::string prometheus_label(std::string_view value);

} // namespace sourcery
