#include "sourcery/runtime/observability/metrics.hpp"

#include <cstdio>

#include "sourcery/persistence/error.hpp"

namespace sourcery {

namespace {

void append_number(std::string& out, double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  out += buf;
}

void append_line(std::string& out, std::string_view name, std::string_view labels, uint64_t v) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += std::to_string(v);
  out += '\n';
}

void append_help(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}


} // namespace

// -- latency_histogram ------------------------------------------------------------

void latency_histogram::observe(std::chrono::nanoseconds took) noexcept {
  double seconds = std::chrono::duration<double>(took).count();
  size_t i = 0;
  while (i < bounds.size() && seconds > bounds[i])
    ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(took.count() > 0 ? took.count() : 0), std::memory_order_relaxed);
}

void latency_histogram::render(std::string& out, std::string_view name, std::string_view labels) const {
  uint64_t cumulative = 0;
  std::string prefix{labels};
  if (!prefix.empty())
    prefix += ',';
  for (size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    std::string le = prefix + "le=\"";
    if (i < bounds.size()) {
      std::string num;
      append_number(num, bounds[i]);
      le += num;
    } else {
      le += "+Inf";
    }
    le += '"';
    append_line(out, std::string{name} + "_bucket", le, cumulative);
  }
  out.append(name).append("_sum");
  if (!labels.empty())
    out.append("{").append(labels).append("}");
  out += ' ';
  append_number(out, static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9);
  out += '\n';
  // _count equals the +Inf bucket, which was summed above.
  append_line(out, std::string{name} + "_count", labels, cumulative);
}

// -- metrics --------------------------------------------------------------------------

std::string_view metrics::outcome_name(size_t i) noexcept {
  if (i == 0)
    return "accepted";
  if (i == 1)
    return "rejected";
  if (i == outcome_count - 1)
    return "error";
  auto code = static_cast<dispatch_errc>(i - 2);
  return code == dispatch_errc::none ? std::string_view{} : to_string(code);
}

void metrics::command_done(const caf::expected<dispatch_result>& r, std::chrono::nanoseconds took) noexcept {
  size_t i = outcome_count - 1;
  if (r) {
    i = r->accepted ? 0 : 1;
    if (r->accepted && r->last_position != 0)
      events_.fetch_add(r->last_position - r->first_position + 1, std::memory_order_relaxed);
  } else if (auto code = code_of_dispatch(r.error()); code != dispatch_errc::none) {
    i = 2 + static_cast<size_t>(code);
    if (i >= outcome_count - 1)
      i = outcome_count - 1;
  } else {
    // The store's outages are the node's unavailability, not a bug: counted
    // as such, so that an alert on "error" means something is wrong.
    using persistence::store_errc;
    switch (persistence::code_of(r.error())) {
      case store_errc::unavailable:
      case store_errc::authentication_failed:
      case store_errc::fenced:
      case store_errc::store_closed:
        i = 2 + static_cast<size_t>(dispatch_errc::unavailable);
        break;
      case store_errc::timeout:
        i = 2 + static_cast<size_t>(dispatch_errc::timeout);
        break;
      default:
        break;
    }
  }
  outcomes_[i].fetch_add(1, std::memory_order_relaxed);
  dispatch_latency_.observe(took);
}

void metrics::supervisor_event(const supervision::supervisor_report& r) {
  using kind = supervision::supervisor_report::kind;
  std::lock_guard guard{sup_mtx_};
  auto& counts = supervisors_[r.supervisor];
  if (r.what == kind::child_terminated)
    ++counts.first;
  else if (r.what == kind::child_restarted)
    ++counts.second;
}

void metrics::http_request(unsigned status, std::chrono::nanoseconds took) noexcept {
  auto cls = status / 100;
  if (cls >= 1 && cls <= 5)
    http_by_class_[cls].fetch_add(1, std::memory_order_relaxed);
  http_latency_.observe(took);
}

uint64_t metrics::commands(std::string_view outcome) const noexcept {
  for (size_t i = 0; i < outcome_count; ++i)
    if (!outcome.empty() && outcome_name(i) == outcome)
      return outcomes_[i].load(std::memory_order_relaxed);
  return 0;
}

uint64_t metrics::restarts() const {
  std::lock_guard guard{sup_mtx_};
  uint64_t n = 0;
  for (auto& [name, counts] : supervisors_)
    n += counts.second;
  return n;
}

void metrics::render(std::string& out) const {
  append_help(out, "sourcery_commands_total", "counter", "Commands dispatched, by outcome.");
  for (size_t i = 0; i < outcome_count; ++i)
    if (auto name = outcome_name(i); !name.empty())
      append_line(out, "sourcery_commands_total", "outcome=\"" + std::string{name} + "\"",
                  outcomes_[i].load(std::memory_order_relaxed));
  append_help(out, "sourcery_events_appended_total", "counter", "Events appended by the commands of this process.");
  append_line(out, "sourcery_events_appended_total", {}, events_appended());
  append_help(out, "sourcery_dispatch_latency_seconds", "histogram",
              "Time from dispatch to answer (including a strong wait).");
  dispatch_latency_.render(out, "sourcery_dispatch_latency_seconds");
  {
    std::lock_guard guard{sup_mtx_};
    append_help(out, "sourcery_child_terminations_total", "counter",
                "Abnormal exits of supervised children, by supervisor.");
    for (auto& [name, counts] : supervisors_)
      append_line(out, "sourcery_child_terminations_total", "supervisor=\"" + prometheus_label(name) + "\"", counts.first);
    append_help(out, "sourcery_restarts_total", "counter", "Restarts of supervised children, by supervisor.");
    for (auto& [name, counts] : supervisors_)
      append_line(out, "sourcery_restarts_total", "supervisor=\"" + prometheus_label(name) + "\"", counts.second);
  }
  append_help(out, "sourcery_http_requests_total", "counter", "HTTP requests answered, by status class.");
  for (unsigned cls = 1; cls <= 5; ++cls)
    append_line(out, "sourcery_http_requests_total", "code=\"" + std::to_string(cls) + "xx\"",
                http_by_class_[cls].load(std::memory_order_relaxed));
  append_help(out, "sourcery_http_request_duration_seconds", "histogram", "Time from request read to response.");
  http_latency_.render(out, "sourcery_http_request_duration_seconds");
}

std::string prometheus_label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"')
      out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

} // namespace sourcery
