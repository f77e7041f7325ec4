// The application's metrics in Prometheus text format: the counters, the
// registration's own, the head of $all, each handler's lag and state, the
// store's health.

#include "sourcery/runtime/application.hpp"

namespace sourcery {

std::string application::metrics_text() const {
  std::string out;
  metrics_.render(out);
  if (registration_)
    registration_->render_metrics(out);
  auto head = store_ ? store_->head_position() : 0; // none once stopped
  out += "# HELP sourcery_head_position The last position of $all.\n# TYPE sourcery_head_position gauge\n";
  out += "sourcery_head_position " + std::to_string(head) + "\n";
  out += "# HELP sourcery_handler_lag_events Events of $all past a handler's checkpoint.\n"
         "# TYPE sourcery_handler_lag_events gauge\n";
  // Handler names are the application's: escaped.
  auto reports = handler_reports();
  for (auto& r : reports)
    out += "sourcery_handler_lag_events{handler=\"" + prometheus_label(r.name) + "\"} "
           + std::to_string(head > r.position ? head - r.position : 0) + "\n";
  out += "# HELP sourcery_handler_up Whether a handler runs (1), or has stopped on an event or retries its"
         " storage (0).\n# TYPE sourcery_handler_up gauge\n";
  for (auto& r : reports)
    out += "sourcery_handler_up{handler=\"" + prometheus_label(r.name) + "\",state=\"" + r.state + "\"} "
           + (r.state == "running" || r.state == "elsewhere" ? "1" : "0") + "\n";
  auto trouble = store_health();
  out += "# HELP sourcery_store_up Whether the store answers (0 while it cannot be reached or does not"
         " answer).\n# TYPE sourcery_store_up gauge\nsourcery_store_up ";
  out += trouble ? "0\n" : "1\n";
  return out;
}

} // namespace sourcery
