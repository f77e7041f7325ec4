#include "probe.hpp"

#include <cerrno>
#include <memory>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sourcery/runtime/cluster/cluster_settings.hpp"

namespace sourcery::cluster::detail {

probe_result probe(const std::string& node, std::chrono::milliseconds timeout) {
  auto address = split_node_address(node);
  if (!address)
    return probe_result::no_answer;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(address->first.c_str(), std::to_string(address->second).c_str(), &hints, &found) != 0)
    return probe_result::no_answer;
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard{found, ::freeaddrinfo};
  int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return probe_result::no_answer;
  auto result = probe_result::no_answer;
  if (::connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    result = probe_result::listening;
  } else if (errno == ECONNREFUSED) {
    result = probe_result::refused;
  } else if (errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      result = err == 0 ? probe_result::listening : err == ECONNREFUSED ? probe_result::refused : probe_result::no_answer;
    }
  }
  ::close(fd);
  return result;
}

} // namespace sourcery::cluster::detail
