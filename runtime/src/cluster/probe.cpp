#include "probe.hpp"

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sourcery/runtime/cluster/cluster_settings.hpp"

namespace sourcery::cluster::detail {

namespace {

using clock = std::chrono::steady_clock;

int millis_left(clock::time_point until) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

/// A name lookup in flight (getaddrinfo_a keeps pointers into it).
struct lookup {
  std::string host, service;
  addrinfo hints{};
  gaicb request{};
};
std::mutex abandoned_mtx;
std::vector<std::unique_ptr<lookup>> abandoned;

/// `host`'s addresses, resolved before `until` (a literal address at once;
/// a name through getaddrinfo_a, given up on at the deadline).
std::vector<sockaddr_storage> resolve(const std::string& host, uint16_t port, clock::time_point until,
                                      std::vector<socklen_t>& lengths) {
  std::vector<sockaddr_storage> out;
  auto service = std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), service.c_str(), &hints, &found) != 0) {
    found = nullptr;
    // A name: resolved on glibc's own thread, waited for until `until`.
    auto r = std::make_unique<lookup>();
    r->host = host;
    r->service = service;
    r->hints.ai_family = AF_UNSPEC;
    r->hints.ai_socktype = SOCK_STREAM;
    r->hints.ai_flags = AI_NUMERICSERV;
    r->request.ar_name = r->host.c_str();
    r->request.ar_service = r->service.c_str();
    r->request.ar_request = &r->hints;
    gaicb* list[1] = {&r->request};
    if (::getaddrinfo_a(GAI_NOWAIT, list, 1, nullptr) != 0)
      return out;
    while (::gai_error(&r->request) == EAI_INPROGRESS) {
      int left = millis_left(until);
      if (left == 0) {
        // Past the deadline. A lookup that cannot be cancelled still
        // writes into its request: kept (reachable) instead of freed.
        if (::gai_cancel(&r->request) != EAI_CANCELED) {
          std::lock_guard guard{abandoned_mtx};
          abandoned.push_back(std::move(r));
        }
        return out;
      }
      timespec wait{left / 1000, static_cast<long>(left % 1000) * 1'000'000L};
      ::gai_suspend(list, 1, &wait);
    }
    if (::gai_error(&r->request) != 0)
      return out;
    found = r->request.ar_result;
  }
  for (auto* a = found; a; a = a->ai_next) {
    sockaddr_storage s{};
    std::memcpy(&s, a->ai_addr, a->ai_addrlen);
    out.push_back(s);
    lengths.push_back(a->ai_addrlen);
  }
  ::freeaddrinfo(found);
  return out;
}

probe_result connect_once(const sockaddr_storage& address, socklen_t length, clock::time_point until) {
  int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return probe_result::no_answer;
  auto result = probe_result::no_answer;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), length) == 0) {
    result = probe_result::listening;
  } else if (errno == ECONNREFUSED) {
    result = probe_result::refused;
  } else if (errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, millis_left(until)) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      result = err == 0 ? probe_result::listening : err == ECONNREFUSED ? probe_result::refused : probe_result::no_answer;
    }
  }
  ::close(fd);
  return result;
}

} // namespace

probe_result probe(const std::string& node, std::chrono::milliseconds timeout) {
  auto address = split_node_address(node);
  if (!address)
    return probe_result::no_answer;
  auto until = clock::now() + timeout;
  std::vector<socklen_t> lengths;
  auto addresses = resolve(address->first, address->second, until, lengths);
  if (addresses.empty())
    return probe_result::no_answer;
  // Refused only if every address refuses: one that listens, or does not
  // answer, may be the peer.
  bool all_refused = true;
  for (size_t i = 0; i < addresses.size(); ++i) {
    auto r = connect_once(addresses[i], lengths[i], until);
    if (r == probe_result::listening)
      return r;
    all_refused &= r == probe_result::refused;
  }
  return all_refused ? probe_result::refused : probe_result::no_answer;
}

} // namespace sourcery::cluster::detail
