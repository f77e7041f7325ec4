#pragma once

// A test never dereferences an `expected` holding an error: `checked(e)` is
// its value, or a thrown failure naming what failed -- GoogleTest reports it
// and ends the test, where `*e` would crash the whole executable.

#include <stdexcept>
#include <string>
#include <utility>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace sourcery::testing {

template <class T>
T checked(caf::expected<T> e, const std::string& what = "expected a value") {
  if (!e)
    throw std::runtime_error(what + ": " + caf::to_string(e.error()));
  return std::move(*e);
}

} // namespace sourcery::testing
