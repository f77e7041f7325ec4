#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "../support/temp_dir.hpp"
#include "sourcery/persistence/event_store.hpp"

namespace sourcery::testing {

/// Opens and reopens one store implementation for the conformance suite.
/// `reopen` drops the current store and opens one on the same storage; for
/// the in-memory store there is no storage, so `persistent` is false.
struct store_factory {
  std::string name;
  bool persistent = false;
  std::function<std::unique_ptr<persistence::event_store>(const temp_dir&)> open;
};

inline void PrintTo(const store_factory& f, std::ostream* os) {
  *os << f.name;
}

} // namespace sourcery::testing
