#pragma once

// A real HTTP/1.1 client for tests (Beast, blocking, over loopback), over
// HTTPS when given the CA to verify the server with, and a raw socket for
// the requests no well-behaved client sends.

#include <sys/socket.h>
#include <sys/time.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include <utility> // before Asio: Boost 1.74 uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

namespace sourcery::test {

struct http_reply {
  unsigned status = 0;
  std::map<std::string, std::string> headers; // names in lower case
  std::string body;
  bool keep_alive = false;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string{} : it->second;
  }
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

/// One keep-alive connection; reconnects when the server closed it.
class http_client {
public:
  /// Plain HTTP, unless `trust_by_default` named a CA: then HTTPS.
  explicit http_client(uint16_t port, std::string host = "127.0.0.1") : port_(port), host_(std::move(host)) {
    if (!default_ca().empty())
      use_tls(default_ca());
  }

  /// From now on, clients made without a CA of their own speak HTTPS to
  /// servers `ca_file` vouches for ("": plain HTTP again). For a test whose
  /// servers all serve HTTPS, and the helpers it calls.
  static void trust_by_default(std::string ca_file) { default_ca() = std::move(ca_file); }

  /// HTTPS: the server's certificate must chain to `ca_file` and name
  /// `host` (a failed handshake throws).
  http_client(uint16_t port, std::string host, const std::string& ca_file) : port_(port), host_(std::move(host)) {
    use_tls(ca_file);
  }

  http_reply request(const std::string& method, const std::string& target, const std::string& body = {},
                     std::map<std::string, std::string> headers = {}) {
    namespace http = boost::beast::http;
    if (!stream_ && !tls_stream_)
      connect();
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, host_ + ":" + std::to_string(port_));
    if (!body.empty())
      req.set(http::field::content_type, "application/json");
    for (auto& [k, v] : headers)
      req.set(k, v);
    req.body() = body;
    req.prepare_payload();
    if (method == "OPTIONS" || method == "HEAD" || method == "GET" || method == "DELETE")
      if (body.empty())
        req.content_length(boost::none);
    boost::beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    parser.skip(method == "HEAD");
    if (tls_stream_) {
      http::write(*tls_stream_, req);
      http::read(*tls_stream_, buffer, parser);
    } else {
      http::write(*stream_, req);
      http::read(*stream_, buffer, parser);
    }
    auto res = parser.release();
    http_reply out;
    out.status = res.result_int();
    for (auto& f : res) {
      std::string name{f.name_string()};
      for (auto& c : name)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.headers[name] = std::string{f.value()};
    }
    out.body = res.body();
    out.keep_alive = res.keep_alive();
    if (!out.keep_alive)
      reconnect();
    return out;
  }

  http_reply get(const std::string& target) { return request("GET", target); }
  http_reply post(const std::string& target, const nlohmann::json& body) { return request("POST", target, body.dump()); }
  http_reply patch(const std::string& target, const nlohmann::json& body) {
    return request("PATCH", target, body.dump());
  }
  http_reply del(const std::string& target) { return request("DELETE", target); }

  /// Every read and write gives up after `limit` (an exception), so a
  /// server that never answers cannot hold a test. 0: no limit.
  void set_timeout(std::chrono::milliseconds limit) {
    timeout_ = limit;
    reconnect();
  }
  /// Drops the connection: the next request opens another.
  void reconnect() {
    stream_.reset();
    tls_stream_.reset();
  }

private:
  static std::string& default_ca() {
    static std::string ca;
    return ca;
  }

  void use_tls(const std::string& ca_file) {
    tls_.emplace(boost::asio::ssl::context::tls_client);
    tls_->load_verify_file(ca_file);
    tls_->set_verify_mode(boost::asio::ssl::verify_peer);
  }

  void connect() {
    boost::beast::tcp_stream* tcp = nullptr;
    if (tls_) {
      tls_stream_.emplace(io_, *tls_);
      tcp = &boost::beast::get_lowest_layer(*tls_stream_);
    } else {
      tcp = &stream_.emplace(io_);
    }
    tcp->connect({boost::asio::ip::make_address(host_), port_});
    set_socket_timeouts(tcp->socket().native_handle());
    if (tls_) {
      tls_stream_->set_verify_callback(boost::asio::ssl::host_name_verification(host_));
      tls_stream_->handshake(boost::asio::ssl::stream_base::client);
    }
  }

  void set_socket_timeouts(int fd) {
    if (timeout_.count() > 0) {
      timeval tv{};
      tv.tv_sec = static_cast<time_t>(timeout_.count() / 1000);
      tv.tv_usec = static_cast<suseconds_t>((timeout_.count() % 1000) * 1000);
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
  }

  std::chrono::milliseconds timeout_{0};
  uint16_t port_;
  std::string host_;
  boost::asio::io_context io_;
  std::optional<boost::asio::ssl::context> tls_;
  std::optional<boost::beast::tcp_stream> stream_;
  std::optional<boost::beast::ssl_stream<boost::beast::tcp_stream>> tls_stream_;
};

/// Sends `bytes` as they are, then reads until the server closes or
/// `wait` passes; returns what came back.
inline std::string raw_exchange(uint16_t port, const std::string& bytes,
                                std::chrono::milliseconds wait = std::chrono::seconds{5}) {
  boost::asio::io_context io;
  boost::beast::tcp_stream s{io};
  s.connect({boost::asio::ip::make_address("127.0.0.1"), port});
  boost::asio::write(s.socket(), boost::asio::buffer(bytes));
  std::string out;
  char buf[4096];
  s.expires_after(wait);
  boost::beast::error_code ec;
  for (;;) {
    auto n = s.read_some(boost::asio::buffer(buf), ec);
    out.append(buf, n);
    if (ec)
      break;
  }
  return out;
}

} // namespace sourcery::test
