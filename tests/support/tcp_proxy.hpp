#pragma once

// A fault-injecting TCP proxy for tests: listens on a loopback port and
// relays each connection to a target port, until told to drop what passes
// -- both ways (a cut link) or one way (a half-broken one) -- and again to
// relay once healed. Connections stay open while they drop: the peers must
// notice the silence themselves.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace sourcery::testing {

class tcp_proxy {
public:
  enum class mode { relay, drop_both, drop_replies };

  explicit tcp_proxy(uint16_t target) : target_(target) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = loopback(0);
    ::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(listener_, 64);
    acceptor_ = std::thread{[this] { accept_loop(); }};
  }
  tcp_proxy(const tcp_proxy&) = delete;
  tcp_proxy& operator=(const tcp_proxy&) = delete;
  ~tcp_proxy() {
    stop_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    acceptor_.join();
    std::lock_guard guard{mtx_};
    for (auto& t : pumps_)
      t.join();
  }

  uint16_t port() const { return port_; }
  void set(mode m) { mode_ = m; }
  /// Bytes swallowed so far (proof that a cut really dropped traffic).
  uint64_t dropped() const { return dropped_.load(); }

private:
  static sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    return a;
  }

  void accept_loop() {
    while (!stop_) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0)
        continue;
      int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0)
        continue;
      int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in t = loopback(target_);
      if (::connect(server, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
        ::close(client);
        ::close(server);
        continue;
      }
      auto c = std::make_shared<connection>();
      c->client = client;
      c->server = server;
      std::lock_guard guard{mtx_};
      pumps_.emplace_back([this, c] { pump(c->client, c->server, false, *c); });
      pumps_.emplace_back([this, c] { pump(c->server, c->client, true, *c); });
    }
  }

  /// Copies `from` to `to` (or drops it, as the mode says) until either side closes.
  struct connection {
    int client = -1, server = -1;
    std::atomic<int> pumping{2};
  };

  void pump(int from, int to, bool reply, connection& c) {
    char buf[16384];
    while (!stop_) {
      pollfd p{from, POLLIN, 0};
      int r = ::poll(&p, 1, 50);
      if (r == 0)
        continue;
      if (r < 0)
        break;
      auto n = ::read(from, buf, sizeof buf);
      if (n <= 0)
        break;
      auto m = mode_.load();
      if (m == mode::drop_both || (m == mode::drop_replies && reply)) {
        dropped_ += static_cast<uint64_t>(n);
        continue;
      }
      for (ssize_t off = 0; off < n;) {
        auto w = ::send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w <= 0)
          break;
        off += w;
      }
    }
    // One side ended: end both (the other pump sees it and leaves too);
    // the last one out closes them.
    ::shutdown(c.client, SHUT_RDWR);
    ::shutdown(c.server, SHUT_RDWR);
    if (--c.pumping == 0) {
      ::close(c.client);
      ::close(c.server);
    }
  }

  uint16_t target_, port_ = 0;
  int listener_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<mode> mode_{mode::relay};
  std::atomic<uint64_t> dropped_{0};
  std::thread acceptor_;
  std::mutex mtx_;
  std::vector<std::thread> pumps_;
};

} // namespace sourcery::testing
