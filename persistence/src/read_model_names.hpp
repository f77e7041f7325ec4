#pragma once

#include <string_view>

#include <caf/error.hpp>

#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

/// Projection and table names of the read-model stores: 1 to 200 bytes
/// without NUL (LMDB keys join them with NUL).
inline bool valid_read_model_name(std::string_view name) {
  return !name.empty() && name.size() <= 200 && name.find('\0') == std::string_view::npos;
}

inline caf::error bad_read_model_name(std::string_view what) {
  return make_error(store_errc::invalid_argument, std::string{what} + " names are 1 to 200 bytes without NUL");
}

} // namespace sourcery::persistence::detail
