// A bank-node of a TLS cluster, its peer port under attack: 2,000
// connections of random bytes, of TLS records announcing more than they
// carry, of handshakes begun and left hanging, and of complete TLS clients
// that hold no certificate. Meanwhile its accounts are served over HTTPS;
// afterwards it is alive and serving, its memory bounded, nothing of the
// intruders stored, and SIGTERM stops it within its drain timeout.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../support/child_process.hpp"
#include "../support/eventually.hpp"
#include "../support/free_port.hpp"
#include "../support/http_client.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "../support/test_ca.hpp"

using namespace std::chrono_literals;

namespace link_fuzz_tests {

/// The resident memory of `pid` in KiB (VmRSS), or 0.
long resident_kib(pid_t pid) {
  std::ifstream status{"/proc/" + std::to_string(pid) + "/status"};
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stol(line.substr(6));
  return 0;
}

/// A loopback TCP connection to `port` with 2 s send and receive limits, or -1.
int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void send_all(int fd, const std::string& bytes) {
  size_t at = 0;
  while (at < bytes.size()) {
    auto n = ::send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
    if (n <= 0)
      return; // the node closed it: fine
    at += static_cast<size_t>(n);
  }
}

/// A TLS client without a certificate that completes its side of the
/// handshake and sends a line; the node must refuse it.
void anonymous_tls_client(uint16_t port) {
  namespace ssl = boost::asio::ssl;
  try {
    ssl::context ctx{ssl::context::tls_client};
    ctx.set_verify_mode(ssl::verify_none);
    boost::asio::io_context io;
    boost::beast::ssl_stream<boost::beast::tcp_stream> s{io, ctx};
    boost::beast::get_lowest_layer(s).expires_after(3s);
    boost::beast::get_lowest_layer(s).connect({boost::asio::ip::make_address("127.0.0.1"), port});
    s.handshake(ssl::stream_base::client);
    boost::asio::write(s, boost::asio::buffer(std::string(64, 'x')));
  } catch (const std::exception&) {
    // refused: what is wanted
  }
}

/// A BASP header as CAF 0.17 writes it (32 bytes, big-endian): a client
/// handshake announcing a payload of `payload` bytes.
std::string handshake_header(uint32_t payload) {
  std::string h(32, '\0');
  h[0] = 1; // client_handshake
  for (int i = 0; i < 4; ++i)
    h[4 + i] = static_cast<char>((payload >> (8 * (3 - i))) & 0xff);
  return h;
}

/// Whether the node closes `fd` within the socket's receive limit (2 s),
/// after whatever it sends first (its own handshake).
bool closed_by_node(int fd) {
  char buf[512];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0)
      return true;
    if (n < 0)
      return errno == ECONNRESET; // EAGAIN: still open when the limit passed
  }
}

/// A TLS connection holding a certificate of the cluster's CA (so past
/// the handshake) that has sent `bytes`.
using tls_stream = boost::beast::ssl_stream<boost::beast::tcp_stream>;
std::unique_ptr<tls_stream> tls_sender(uint16_t port, const std::string& bytes, boost::asio::io_context& io,
                                       boost::asio::ssl::context& ctx) {
  auto s = std::make_unique<tls_stream>(io, ctx);
  boost::beast::get_lowest_layer(*s).expires_after(3s);
  boost::beast::get_lowest_layer(*s).connect({boost::asio::ip::make_address("127.0.0.1"), port});
  s->handshake(boost::asio::ssl::stream_base::client);
  boost::asio::write(*s, boost::asio::buffer(bytes));
  return s;
}

/// Whether the node closes `s` within 3 s, after whatever it sends first.
bool closed_by_node(tls_stream& s) {
  boost::beast::get_lowest_layer(s).expires_after(3s);
  char buf[512];
  boost::system::error_code ec;
  for (;;) {
    s.read_some(boost::asio::buffer(buf), ec);
    if (ec)
      return ec != boost::beast::error::timeout && ec != boost::asio::error::operation_aborted;
  }
}

} // namespace link_fuzz_tests

TEST(link_fuzz, a_tls_node_survives_2000_hostile_connections_serving_bounded_and_stops_on_time) {
  using namespace link_fuzz_tests;
  sourcery::testing::temp_dir dir;
  sourcery::testing::test_ca ca{dir.str(), "fuzz"};
  auto files = ca.issue("node");
  auto uri = sourcery::testing::test_pg_store(dir);
  auto peer_port = sourcery::testing::free_port();
  auto http_port = sourcery::testing::free_port();
  sourcery::testing::child_process node{
    BANK_NODE_PATH,
    {"--store", uri, "--cluster", "fuzz", "--node", "127.0.0.1:" + std::to_string(peer_port), "--http",
     std::to_string(http_port), "--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca", ca.cert()},
    dir.str() + "/node.log"};
  auto line = node.read_line();
  ASSERT_NE(line.find("listening on https://"), std::string::npos) << line;

  sourcery::test::http_client client{http_port, "127.0.0.1", ca.cert()};
  client.set_timeout(10s);
  ASSERT_EQ(client.post("/accounts", {{"account", "a"}}).status, 201u);
  ASSERT_EQ(client.post("/accounts/a/deposits", {{"amount", 1}}).status, 200u);
  auto before = resident_kib(node.pid());

  // Deposits over HTTPS all along: each must be answered 200.
  std::atomic<bool> attacking{true};
  std::atomic<int> deposits{0}, failed{0};
  std::thread depositor{[&] {
    sourcery::test::http_client c{http_port, "127.0.0.1", ca.cert()};
    c.set_timeout(10s);
    while (attacking.load()) {
      try {
        if (c.post("/accounts/a/deposits", {{"amount", 1}}).status == 200)
          ++deposits;
        else
          ++failed;
      } catch (const std::exception&) {
        ++failed;
        c.reconnect();
      }
      std::this_thread::sleep_for(20ms); // a client's pace, not a flood
    }
  }};

  constexpr int total = 2000, threads = 8;
  std::atomic<int> next{0};
  std::vector<std::thread> attackers;
  for (int t = 0; t < threads; ++t)
    attackers.emplace_back([&, t] {
      std::mt19937 rng{static_cast<unsigned>(t) + 11u};
      std::vector<int> hanging; // handshakes begun and left open for a while
      for (int i = next++; i < total; i = next++) {
        if (i % 10 == 9) {
          anonymous_tls_client(peer_port);
          continue;
        }
        int fd = connect_to(peer_port);
        if (fd < 0)
          continue;
        std::string bytes;
        switch (i % 3) {
          case 0: // random bytes
            bytes.resize(1 + rng() % 4096);
            for (auto& b : bytes)
              b = static_cast<char>(rng());
            break;
          case 1: // a handshake record announcing 16 KiB and more, carrying a few bytes
            bytes = std::string{"\x16\x03\x03\xff\xff\x01\xff\xff\xff", 9} + std::string(100, '\x7f');
            break;
          default: // the start of a ClientHello, then silence
            bytes = std::string{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11};
            break;
        }
        send_all(fd, bytes);
        if (i % 3 == 2) {
          hanging.push_back(fd);
          if (hanging.size() >= 25) { // at most 200 hang at once, across the threads
            for (int h : hanging)
              ::close(h);
            hanging.clear();
          }
        } else {
          ::close(fd);
        }
      }
      for (int h : hanging)
        ::close(h);
    });
  for (auto& a : attackers)
    a.join();
  attacking = false;
  depositor.join();

  EXPECT_FALSE(node.wait_for(0ms).has_value()) << "the node died";
  EXPECT_GT(deposits.load(), 0);
  EXPECT_EQ(failed.load(), 0) << "deposits failed while the port was attacked";
  // A connection of its own: the first one sat idle through the attack, and
  // the gateway closes idle connections (on a loaded machine the attack
  // outlasted that, and the next request read "end of stream").
  client.reconnect();
  auto r = client.post("/accounts/a/deposits", {{"amount", 1}});
  EXPECT_EQ(r.status, 200u) << r.body;
  auto balance = client.get("/accounts/a").json()["balance"].get<int64_t>();
  EXPECT_EQ(balance, deposits.load() + 2) << "every deposit once, nothing else";
  auto after = resident_kib(node.pid());
  EXPECT_LT(after, before + 100 * 1024) << "resident " << before << " KiB before, " << after << " KiB after";
  auto health = client.get("/health");
  EXPECT_EQ(health.status, 200u) << health.body;

  auto t0 = std::chrono::steady_clock::now();
  node.signal(SIGTERM);
  auto status = node.wait_for(15s);
  ASSERT_TRUE(status.has_value()) << "SIGTERM did not stop the node within 15 s";
  EXPECT_EQ(*status, 0);
  // The cluster's drain (2 s) and the gateway's: a few seconds, not the 12 s seen before.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 6s);
  std::printf("resident %ld -> %ld KiB; %d deposits served during the attack; stopped in %lld ms\n", before, after,
              deposits.load(),
              static_cast<long long>(
                std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()));
}

// CAF 0.17 sizes a frame's buffer to whatever length its header announces
// (three 36-byte headers once made a node resident 5 GB). A node reads no
// frame above max_frame_bytes (8 MiB): the connection closes, nothing is
// allocated, the frame is counted, and the node serves on. Over plain
// links (anyone on loopback) and over TLS (a peer with a valid certificate).
TEST(link_fuzz, a_frame_announcing_more_than_the_limit_closes_its_link_and_allocates_nothing) {
  using namespace link_fuzz_tests;
  for (bool tls : {false, true}) {
    SCOPED_TRACE(tls ? "tls" : "plain");
    sourcery::testing::temp_dir dir;
    sourcery::testing::test_ca ca{dir.str(), "frames"};
    auto files = ca.issue("node");
    auto member = ca.issue("member");
    auto uri = sourcery::testing::test_pg_store(dir);
    auto peer_port = sourcery::testing::free_port();
    auto http_port = sourcery::testing::free_port();
    std::vector<std::string> args{"--store", uri, "--cluster", "frames", "--node",
                                  "127.0.0.1:" + std::to_string(peer_port), "--http", std::to_string(http_port)};
    if (tls)
      args.insert(args.end(), {"--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca", ca.cert()});
    sourcery::testing::child_process node{BANK_NODE_PATH, args, dir.str() + "/node.log"};
    auto line = node.read_line();
    ASSERT_NE(line.find("listening on"), std::string::npos) << line;
    std::optional<sourcery::test::http_client> https, http;
    if (tls)
      https.emplace(http_port, "127.0.0.1", ca.cert());
    else
      http.emplace(http_port);
    auto& client = tls ? *https : *http;
    client.set_timeout(10s);
    ASSERT_EQ(client.post("/accounts", {{"account", "a"}}).status, 201u);
    auto before = resident_kib(node.pid());

    constexpr uint32_t huge = 0x7ffffff0, just_above = (8u << 20) + 1;
    constexpr int closing = 10, holding = 10;
    boost::asio::io_context io;
    boost::asio::ssl::context ctx{boost::asio::ssl::context::tls_client};
    ctx.set_verify_mode(boost::asio::ssl::verify_none);
    ctx.use_certificate_chain_file(member.cert);
    ctx.use_private_key_file(member.key, boost::asio::ssl::context::pem);
    std::vector<std::unique_ptr<tls_stream>> held_tls;
    std::vector<int> held;
    // Announced sizes above the limit with a byte of payload: each closed.
    for (int i = 0; i < closing; ++i) {
      auto bytes = handshake_header(i % 2 ? huge : just_above) + "x";
      if (tls) {
        EXPECT_TRUE(closed_by_node(*tls_sender(peer_port, bytes, io, ctx))) << "frame " << i << " left its link open";
      } else {
        int fd = connect_to(peer_port);
        ASSERT_GE(fd, 0);
        send_all(fd, bytes);
        EXPECT_TRUE(closed_by_node(fd)) << "frame " << i << " left its connection open";
        ::close(fd);
      }
    }
    // The same headers alone, their connections held open: nothing grows.
    for (int i = 0; i < holding; ++i) {
      auto bytes = handshake_header(huge);
      if (tls) {
        held_tls.push_back(tls_sender(peer_port, bytes, io, ctx));
      } else {
        int fd = connect_to(peer_port);
        ASSERT_GE(fd, 0);
        send_all(fd, bytes);
        held.push_back(fd);
      }
    }
    auto counted = [&] {
      auto text = client.get("/metrics").body;
      auto at = text.find("\nsourcery_cluster_frames_refused_total ");
      return at == std::string::npos ? 0ull : std::stoull(text.substr(at + 39));
    };
    EXPECT_TRUE(sourcery::testing::eventually([&] { return counted() >= closing + holding; }, 10s))
      << "frames refused: " << counted();
    auto after = resident_kib(node.pid());
    EXPECT_LT(after, before + 64 * 1024) << "resident " << before << " KiB before, " << after << " KiB after";
    auto r = client.post("/accounts/a/deposits", {{"amount", 1}});
    EXPECT_EQ(r.status, 200u) << r.body;
    for (int fd : held)
      ::close(fd);
    held_tls.clear();
    // Logged by the node's keeper, at its next round.
    auto logged = [&] {
      std::ifstream log_file{dir.str() + "/node.log"};
      std::string log{std::istreambuf_iterator<char>{log_file}, {}};
      return log.find("announced a frame above the limit") != std::string::npos;
    };
    EXPECT_TRUE(sourcery::testing::eventually(logged, 10s)) << "the refused frames were not logged";
    node.signal(SIGTERM);
    auto status = node.wait_for(15s);
    ASSERT_TRUE(status.has_value()) << "SIGTERM did not stop the node within 15 s";
    EXPECT_EQ(*status, 0);
    std::printf("%s: resident %ld -> %ld KiB with %d oversized frames refused\n", tls ? "tls" : "plain", before, after,
                closing + holding);
  }
}
