#include "sourcery/persistence/expected_version.hpp"

namespace sourcery::persistence {

std::string expected_version::to_string() const {
  switch (kind_) {
    case kind::any: return "any";
    case kind::no_stream: return "no_stream";
    case kind::stream_exists: return "stream_exists";
    case kind::exact: return "exact " + std::to_string(value_);
  }
  return "?";
}

} // namespace sourcery::persistence
