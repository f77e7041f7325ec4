#include "sourcery/supervision/error.hpp"

#include <caf/exit_reason.hpp>
#include <caf/make_message.hpp>
#include <caf/sec.hpp>
#include <caf/message.hpp>

namespace sourcery::supervision {

std::string_view to_string(supervision_errc code) noexcept {
  switch (code) {
    case supervision_errc::none: return "none";
    case supervision_errc::invalid_child_id: return "invalid_child_id";
    case supervision_errc::invalid_start: return "invalid_start";
    case supervision_errc::invalid_significant: return "invalid_significant";
    case supervision_errc::invalid_shutdown: return "invalid_shutdown";
    case supervision_errc::invalid_backoff: return "invalid_backoff";
    case supervision_errc::invalid_flags: return "invalid_flags";
    case supervision_errc::duplicate_child_id: return "duplicate_child_id";
    case supervision_errc::child_not_found: return "child_not_found";
    case supervision_errc::child_running: return "child_running";
    case supervision_errc::wrong_strategy: return "wrong_strategy";
    case supervision_errc::start_failed: return "start_failed";
    case supervision_errc::reached_max_restart_intensity: return "reached_max_restart_intensity";
    case supervision_errc::shutting_down: return "shutting_down";
  }
  return "unknown";
}

caf::error make_error(supervision_errc code, std::string message) {
  return caf::error{static_cast<uint8_t>(code), supervision_error_category, caf::make_message(std::move(message))};
}

supervision_errc code_of(const caf::error& err) noexcept {
  if (!err || err.category() != supervision_error_category)
    return supervision_errc::none;
  return static_cast<supervision_errc>(err.code());
}

std::string describe(const caf::error& err) {
  if (!err)
    return "no error";
  std::string out;
  if (err.category() == supervision_error_category)
    out = to_string(static_cast<supervision_errc>(err.code()));
  else if (err.category() == caf::atom("exit"))
    out = caf::to_string(static_cast<caf::exit_reason>(err.code()));
  else if (err.category() == caf::atom("system"))
    out = caf::to_string(static_cast<caf::sec>(err.code()));
  else
    out = caf::to_string(err.category()) + ":" + std::to_string(err.code());
  const auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    out += ": " + ctx.get_as<std::string>(0);
  return out;
}

} // namespace sourcery::supervision
