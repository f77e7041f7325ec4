#include "sourcery/actors/aggregates/command_result.hpp"

#include <caf/make_message.hpp>
#include <caf/message.hpp>

#include "sourcery/persistence/error.hpp"
#include "sourcery/supervision/error.hpp"

namespace sourcery {

std::string_view to_string(dispatch_errc code) noexcept {
  switch (code) {
    case dispatch_errc::none: return "none";
    case dispatch_errc::unregistered_command: return "unregistered_command";
    case dispatch_errc::halted: return "halted";
    case dispatch_errc::timeout: return "timeout";
    case dispatch_errc::stopped: return "stopped";
    case dispatch_errc::invalid_route: return "invalid_route";
    case dispatch_errc::consistency_timeout: return "consistency_timeout";
    case dispatch_errc::invalid_identity: return "invalid_aggregate_identity";
    case dispatch_errc::unavailable: return "unavailable";
    case dispatch_errc::malformed_command: return "malformed_command";
    case dispatch_errc::moved: return "moved";
    case dispatch_errc::too_large: return "too_large";
  }
  return "unknown";
}

caf::error make_error(dispatch_errc code, std::string message) {
  return caf::error{static_cast<uint8_t>(code), dispatch_error_category, caf::make_message(std::move(message))};
}

dispatch_errc code_of_dispatch(const caf::error& err) noexcept {
  if (!err || err.category() != dispatch_error_category)
    return dispatch_errc::none;
  return static_cast<dispatch_errc>(err.code());
}

std::string describe_error(const caf::error& err) {
  if (err.category() == dispatch_error_category) {
    std::string out{to_string(static_cast<dispatch_errc>(err.code()))};
    const auto& ctx = err.context();
    if (ctx.size() == 1 && ctx.match_element<std::string>(0))
      out += ": " + ctx.get_as<std::string>(0);
    return out;
  }
  if (err.category() == persistence::store_error_category)
    return persistence::describe(err);
  return supervision::describe(err);
}

} // namespace sourcery
