#include "sourcery/supervision/child_spec.hpp"

#include <algorithm>
#include <cmath>

#include "sourcery/supervision/error.hpp"
#include "sourcery/supervision/supervisor_flags.hpp"

namespace sourcery::supervision {

std::chrono::milliseconds backoff_policy::delay(uint32_t n, double u) const {
  double base = static_cast<double>(initial.count()) * std::pow(multiplier, n > 0 ? n - 1 : 0);
  base = std::min(base, static_cast<double>(max.count()));
  double factor = 1.0 + jitter * (2.0 * u - 1.0);
  return std::chrono::milliseconds{static_cast<int64_t>(std::llround(std::max(0.0, base * factor)))};
}

caf::error validate(const child_spec& spec) {
  if (spec.id.empty() || spec.id.size() > 255)
    return make_error(supervision_errc::invalid_child_id, "child id must be 1 to 255 bytes");
  if (!spec.start)
    return make_error(supervision_errc::invalid_start, "child '" + spec.id + "' has no start function");
  if (spec.significant && spec.restart == restart_type::permanent)
    return make_error(supervision_errc::invalid_significant,
                      "child '" + spec.id + "' is significant and permanent; significant children are transient or temporary");
  if (spec.shutdown && spec.shutdown->how == shutdown_policy::kind::timeout && spec.shutdown->time.count() <= 0)
    return make_error(supervision_errc::invalid_shutdown, "child '" + spec.id + "' has a shutdown timeout <= 0");
  if (spec.backoff) {
    const auto& b = *spec.backoff;
    if (b.initial.count() <= 0 || b.max < b.initial || b.multiplier < 1.0 || b.jitter < 0.0 || b.jitter > 1.0
        || (b.reset_after && b.reset_after->count() <= 0))
      return make_error(supervision_errc::invalid_backoff,
                        "child '" + spec.id + "' has a backoff with initial <= 0, max < initial, multiplier < 1 or jitter outside [0, 1]");
  }
  return {};
}

caf::error validate(const supervisor_flags& flags) {
  if (flags.intensity < 0)
    return make_error(supervision_errc::invalid_flags, "intensity must be >= 0");
  if (flags.period.count() <= 0)
    return make_error(supervision_errc::invalid_flags, "period must be > 0");
  return {};
}

std::string_view to_string(strategy s) noexcept {
  switch (s) {
    case strategy::one_for_one: return "one_for_one";
    case strategy::one_for_all: return "one_for_all";
    case strategy::rest_for_one: return "rest_for_one";
    case strategy::simple_one_for_one: return "simple_one_for_one";
  }
  return "?";
}

} // namespace sourcery::supervision
