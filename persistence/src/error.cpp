#include "sourcery/persistence/error.hpp"

#include <caf/make_message.hpp>
#include <caf/message.hpp>

namespace sourcery::persistence {

std::string_view to_string(store_errc code) noexcept {
  switch (code) {
    case store_errc::none: return "none";
    case store_errc::wrong_expected_version: return "wrong_expected_version";
    case store_errc::stream_deleted: return "stream_deleted";
    case store_errc::invalid_argument: return "invalid_argument";
    case store_errc::malformed_payload: return "malformed_payload";
    case store_errc::corrupt_record: return "corrupt_record";
    case store_errc::unknown_event_type: return "unknown_event_type";
    case store_errc::type_mismatch: return "type_mismatch";
    case store_errc::store_full: return "store_full";
    case store_errc::io_error: return "io_error";
    case store_errc::foreign_store: return "foreign_store";
    case store_errc::unsupported_format_version: return "unsupported_format_version";
    case store_errc::corrupt_store: return "corrupt_store";
    case store_errc::store_closed: return "store_closed";
    case store_errc::subscription_exists: return "subscription_exists";
    case store_errc::handler_failed: return "handler_failed";
    case store_errc::timeout: return "timeout";
    case store_errc::store_in_use: return "store_in_use";
    case store_errc::unavailable: return "unavailable";
    case store_errc::authentication_failed: return "authentication_failed";
    case store_errc::fenced: return "fenced";
    case store_errc::no_store: return "no_store";
  }
  return "unknown";
}

caf::error make_error(store_errc code, std::string message) {
  return caf::error{static_cast<uint8_t>(code), store_error_category,
                    caf::make_message(std::move(message))};
}

caf::error make_error(store_errc code) {
  return make_error(code, std::string{to_string(code)});
}

store_errc code_of(const caf::error& err) noexcept {
  if (!err || err.category() != store_error_category)
    return store_errc::none;
  return static_cast<store_errc>(err.code());
}

std::string describe(const caf::error& err) {
  if (!err)
    return "no error";
  std::string result;
  if (err.category() == store_error_category)
    result = to_string(static_cast<store_errc>(err.code()));
  else
    result = caf::to_string(err.category()) + ":" + std::to_string(err.code());
  const auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0)) {
    result += ": ";
    result += ctx.get_as<std::string>(0);
  }
  return result;
}

} // namespace sourcery::persistence
