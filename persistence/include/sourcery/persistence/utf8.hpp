#pragma once

#include <string_view>

namespace sourcery::persistence {

/// Whether `s` is well-formed UTF-8: no overlong forms, no surrogates,
/// nothing past U+10FFFF. (PostgreSQL text columns, JSON output and HTTP
/// paths all need it.)
bool valid_utf8(std::string_view s) noexcept;

} // namespace sourcery::persistence
