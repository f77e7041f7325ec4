#include "sourcery/runtime/cluster/cluster_settings.hpp"

#include <charconv>

#include <arpa/inet.h>
#include <netinet/in.h>

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

bool is_loopback_host(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "localhost" || host == "::1")
    return true;
  in_addr v4{};
  return inet_pton(AF_INET, std::string{host}.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

} // namespace sourcery::cluster
