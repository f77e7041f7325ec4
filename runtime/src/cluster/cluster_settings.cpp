#include "sourcery/runtime/cluster/cluster_settings.hpp"

#include <charconv>

#include "sourcery/persistence/error.hpp"

namespace sourcery::cluster {

caf::expected<std::pair<std::string, uint16_t>> split_node_address(const std::string& node) {
  auto colon = node.rfind(':');
  unsigned port = 0;
  if (colon == std::string::npos || colon == 0)
    return persistence::make_error(persistence::store_errc::invalid_argument,
                                   "a node address is HOST:PORT, not '" + node + "'");
  auto digits = std::string_view{node}.substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc{} || end != digits.data() + digits.size() || port == 0 || port > 65535)
    return persistence::make_error(persistence::store_errc::invalid_argument,
                                   "the port of node address '" + node + "' is not 1..65535");
  return std::pair<std::string, uint16_t>{node.substr(0, colon), static_cast<uint16_t>(port)};
}

} // namespace sourcery::cluster
