#include "sourcery/runtime/http/gateway.hpp"

#include <atomic>
#include <condition_variable>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <utility> // before Asio: Boost 1.74 uses std::exchange without it

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <caf/sec.hpp>
#include <openssl/ssl.h>

#include "sourcery/persistence/hex.hpp"
#include "sourcery/runtime/observability/metrics.hpp"

namespace sourcery::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using steady = std::chrono::steady_clock;

namespace {

using persistence::hex_value;

/// Percent-decodes `s` ('+' too, in a query); nullopt for a broken escape.
std::optional<std::string> decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      int hi = i + 1 < s.size() ? hex_value(s[i + 1]) : -1;
      int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
      if (hi < 0 || lo < 0)
        return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

/// The segments of a path ("/todos/1" -> {"todos", "1"}); empty ones dropped,
/// so a trailing slash names the same resource.
std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= path.size()) {
    auto j = path.find('/', i);
    if (j == std::string_view::npos)
      j = path.size();
    if (j > i)
      out.emplace_back(path.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

struct route_entry {
  std::string method;
  std::vector<std::string> segments; // "{name}" for a parameter
  handler h;
  route_thread where = route_thread::workers;
};

bool is_param(const std::string& seg) {
  return seg.size() >= 2 && seg.front() == '{' && seg.back() == '}';
}

bool match(const route_entry& r, const std::vector<std::string>& segs, std::map<std::string, std::string>* params) {
  if (r.segments.size() != segs.size())
    return false;
  for (size_t i = 0; i < segs.size(); ++i) {
    if (is_param(r.segments[i])) {
      if (params)
        (*params)[r.segments[i].substr(1, r.segments[i].size() - 2)] = segs[i];
    } else if (r.segments[i] != segs[i]) {
      return false;
    }
  }
  return true;
}

} // namespace

/// What `stop` does to every connection, whatever its stream.
class session_base {
public:
  virtual ~session_base() = default;
  virtual void start() = 0;
  /// Closes the connection unless a request is in flight.
  virtual void close_if_idle() = 0;
  virtual void close_now() = 0;
};

struct gateway::impl {
  gateway_config cfg;
  std::vector<route_entry> routes;

  // Declared before the io_context: sessions it still holds at its
  // destruction unregister here.
  std::mutex mtx;
  std::condition_variable cv;
  std::list<std::weak_ptr<session_base>> sessions;
  size_t live = 0;
  bool stop_requested = false;
  bool stopped = false;
  /// Responders outlive the gateway in the application: they post only
  /// while this is true (guarded by `post_mtx`).
  std::shared_ptr<std::pair<std::mutex, bool>> open = std::make_shared<std::pair<std::mutex, bool>>();

  net::io_context io;
  std::optional<net::ssl::context> tls; // HTTPS: every connection's TLS settings
  // Keeps the threads in `io.run` while a route holds a request and no
  // socket operation is pending.
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::optional<tcp::acceptor> acceptor;
  std::optional<net::steady_timer> accept_backoff; // on the acceptor's strand
  std::optional<net::signal_set> signals;
  std::vector<std::thread> threads;
  std::optional<net::thread_pool> workers; // the routes that may block
  std::atomic<bool> draining{false};
  uint16_t bound_port = 0;

  void accept();
  void serve(request& req, responder answer);
  std::string allowed(const std::vector<std::string>& segs) const;
};

using plain_stream = beast::tcp_stream;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

/// One connection: reads a request, answers it, and again while keep-alive.
/// `Stream` is plain TCP or TLS over it (HTTPS: a handshake first).
template <class Stream>
class session : public session_base, public std::enable_shared_from_this<session<Stream>> {
  static constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

public:
  template <class... Args>
  session(gateway::impl& gw, Args&&... stream_args)
    : gw_(gw), stream_(std::forward<Args>(stream_args)...), timer_(stream_.get_executor()) {}

  ~session() override {
    std::lock_guard guard{gw_.mtx};
    --gw_.live;
    gw_.cv.notify_all();
  }

  void start() override {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (is_tls) {
        // A client that connects and sends nothing, or half a handshake,
        // holds the connection no longer than a request may take.
        self->arm_read_timer();
        self->stream_.async_handshake(net::ssl::stream_base::server, [self](beast::error_code ec) {
          self->timer_.cancel();
          if (ec)
            return self->close_now_here(); // not TLS, another protocol, or it gave up
          self->read_header();
        });
      } else {
        self->read_header();
      }
    });
  }

  void close_if_idle() override {
    // Idle, it waits in a read: over TLS a shutdown would read beside it,
    // so the socket is closed as it is.
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if (!self->busy_)
        self->close_now_here();
    });
  }

  void close_now() override {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->close_now_here(); });
  }

private:
  auto& tcp_layer() { return beast::get_lowest_layer(stream_); }

  /// After `read_timeout`, cancels what the socket waits for.
  void arm_read_timer() {
    timed_out_ = false;
    timer_.expires_after(gw_.cfg.read_timeout);
    timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (!ec) {
        self->timed_out_ = true;
        beast::error_code ignored;
        self->tcp_layer().socket().cancel(ignored);
      }
    });
  }

  void read_header() {
    if (gw_.draining.load())
      return close();
    parser_.emplace();
    parser_->body_limit(gw_.cfg.body_limit);
    parser_->header_limit(static_cast<uint32_t>(gw_.cfg.header_limit));
    arm_read_timer();
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec)
      return on_read_error(ec);
    busy_ = true;
    started_ = steady::now();
    auto& req = parser_->get();
    if (beast::iequals(req[bhttp::field::expect], "100-continue") && !parser_->is_done()) {
      auto cont = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_, req.version());
      bhttp::async_write(stream_, *cont, [self = this->shared_from_this(), cont](beast::error_code wec, size_t) {
        if (wec)
          return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    if (parser_->is_done())
      return on_request();
    bhttp::async_read(stream_, buffer_, *parser_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec)
        return self->on_read_error(ec);
      self->on_request();
    });
  }

  void on_read_error(beast::error_code ec) {
    timer_.cancel();
    if (timed_out_) {
      if (parser_ && parser_->got_some())
        return answer_and_close({408, "request_timeout", "the request did not arrive within "
                                                           + std::to_string(gw_.cfg.read_timeout.count()) + " ms"});
      return close(); // an idle keep-alive connection
    }
    if (ec == bhttp::error::body_limit)
      return answer_and_close({413, "payload_too_large",
                               "the body exceeds " + std::to_string(gw_.cfg.body_limit) + " bytes"});
    if (ec == bhttp::error::header_limit)
      return answer_and_close({431, "headers_too_large",
                               "the headers exceed " + std::to_string(gw_.cfg.header_limit) + " bytes"});
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category()
        && ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message)
      return answer_and_close({400, "bad_request", "malformed HTTP request: " + ec.message()});
    close(); // the peer went away (eof, reset, partial message)
  }

  void on_request() {
    timer_.cancel();
    auto msg = parser_->release();
    request req;
    req.method = std::string{msg.method_string()};
    req.target = std::string{msg.target()};
    auto q = req.target.find('?');
    auto path = decode(std::string_view{req.target}.substr(0, q), false);
    for (auto& f : msg) {
      std::string name{f.name_string()};
      for (auto& c : name)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req.headers.emplace_back(std::move(name), std::string{f.value()});
    }
    req.body = std::move(msg.body());
    req.secure = is_tls;
    bool keep = msg.keep_alive();
    unsigned version = msg.version();
    bool head = msg.method() == bhttp::verb::head;
    auto self = this->shared_from_this();
    responder answer{[self, keep, version, head, open = gw_.open](response r) {
      std::lock_guard guard{open->first};
      if (!open->second)
        return; // the gateway has stopped
      net::post(self->stream_.get_executor(), [self, r = std::move(r), keep, version, head]() mutable {
        self->write(std::move(r), keep, version, head);
      });
    }};
    if (!path || req.target.empty() || req.target.front() != '/') {
      answer(error{400, "bad_request", "the request target is not a valid path"});
      return;
    }
    // Refused where it enters: routes, logs and JSON answers may then trust
    // that paths, parameters and the query are text.
    if (!valid_utf8(*path)) {
      answer(error{400, "bad_request", "the request path is not valid UTF-8"});
      return;
    }
    if (auto why = host_problem(req)) {
      answer(error{400, "bad_request", why});
      return;
    }
    req.path = std::move(*path);
    if (q != std::string::npos) {
      std::string_view query = std::string_view{req.target}.substr(q + 1);
      size_t i = 0;
      while (i <= query.size()) {
        auto j = query.find('&', i);
        if (j == std::string_view::npos)
          j = query.size();
        auto kv = query.substr(i, j - i);
        if (!kv.empty()) {
          auto eq = kv.find('=');
          auto k = decode(kv.substr(0, eq), true);
          auto v = eq == std::string_view::npos ? std::optional<std::string>{""} : decode(kv.substr(eq + 1), true);
          if (!k || !v || !valid_utf8(*k) || !valid_utf8(*v)) {
            answer(error{400, "bad_request", "the query is not valid percent-encoded UTF-8"});
            return;
          }
          req.query[*k] = *v;
        }
        i = j + 1;
      }
    }
    try {
      gw_.serve(req, answer);
    } catch (const std::exception& e) { // a route's bug must not end the process
      answer(error{500, "internal_error", e.what()});
    } catch (...) {
      answer(error{500, "internal_error", "the route threw"});
    }
  }

  /// Why the Host header is unacceptable (RFC 9112 §3.2: a request with
  /// several, or one that is not a valid authority, gets 400), or nullptr.
  static const char* host_problem(const request& req) {
    int hosts = 0;
    for (auto& [k, v] : req.headers) {
      if (k != "host")
        continue;
      if (++hosts > 1)
        return "the request has more than one Host header";
      for (unsigned char c : v) {
        // reg-name, IPv4, IP-literal and port characters (RFC 3986 §3.2).
        bool ok = std::isalnum(c) || std::strchr("-._~%!$&'()*+,;=:[]", c) != nullptr;
        if (!ok || c == '\0')
          return "the Host header is not a valid host name";
      }
    }
    return nullptr;
  }

  void answer_and_close(const error& e) {
    busy_ = true;
    started_ = steady::now();
    write(error_response(e), false, 11, false);
  }

  void write(response r, bool keep, unsigned version, bool head) {
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(static_cast<bhttp::status>(r.status), version);
    res->set(bhttp::field::server, "Sourcery");
    if (!gw_.cfg.cors_origin.empty())
      res->set(bhttp::field::access_control_allow_origin, gw_.cfg.cors_origin);
    for (auto& [k, v] : r.headers)
      res->set(k, v);
    if (!r.body.empty() && !r.content_type.empty())
      res->set(bhttp::field::content_type, r.content_type);
    res->keep_alive(keep && !gw_.draining.load());
    bool no_body = r.status == 204 || r.status == 304 || r.status < 200;
    if (!no_body) {
      res->body() = std::move(r.body);
      res->prepare_payload();
      if (head)
        res->body().clear(); // the length of the GET answer, no body
    }
    if (gw_.cfg.metrics != nullptr)
      gw_.cfg.metrics->http_request(r.status, steady::now() - started_);
    tcp_layer().expires_after(gw_.cfg.read_timeout);
    bhttp::async_write(stream_, *res, [self = this->shared_from_this(), res](beast::error_code ec, size_t) {
      self->busy_ = false;
      if (ec || !res->keep_alive())
        return self->close();
      self->tcp_layer().expires_never();
      self->read_header();
    });
  }

  /// Ends the connection politely: over TLS, a close_notify first (its
  /// answer awaited 1 s at most).
  void close() {
    if constexpr (is_tls) {
      if (closing_)
        return;
      closing_ = true;
      timer_.cancel();
      tcp_layer().expires_after(std::chrono::seconds{1});
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) { self->close_now_here(); });
    } else {
      close_now_here();
    }
  }

  void close_now_here() {
    timer_.cancel();
    beast::error_code ignored;
    tcp_layer().socket().shutdown(tcp::socket::shutdown_send, ignored);
    tcp_layer().close();
  }

  gateway::impl& gw_;
  Stream stream_;
  net::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  steady::time_point started_;
  bool busy_ = false;
  bool timed_out_ = false;
  bool closing_ = false; // a TLS shutdown is under way
};

void gateway::impl::accept() {
  acceptor->async_accept(net::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || draining.load())
        return;
      // Out of descriptors or memory: the pending connection stays in the
      // backlog and would fail again at once (a busy loop); try again later.
      if (ec == net::error::no_descriptors || ec == net::error::no_buffer_space || ec == net::error::no_memory
          || ec.value() == ENFILE) {
        accept_backoff->expires_after(std::chrono::milliseconds{100});
        accept_backoff->async_wait([this](beast::error_code wec) {
          if (!wec && !draining.load())
            accept();
        });
        return;
      }
      accept(); // a transient failure of one connection (reset before accept): keep serving
      return;
    }
    if (draining.load())
      return;
    std::shared_ptr<session_base> s;
    if (tls)
      s = std::make_shared<session<tls_stream>>(*this, std::move(socket), *tls);
    else
      s = std::make_shared<session<plain_stream>>(*this, std::move(socket));
    {
      std::lock_guard guard{mtx};
      ++live;
      sessions.remove_if([](const std::weak_ptr<session_base>& w) { return w.expired(); });
      sessions.push_back(s);
    }
    s->start();
    accept();
  });
}

std::string gateway::impl::allowed(const std::vector<std::string>& segs) const {
  std::vector<std::string> methods;
  for (auto& r : routes)
    if (match(r, segs, nullptr) && std::find(methods.begin(), methods.end(), r.method) == methods.end())
      methods.push_back(r.method);
  if (methods.empty())
    return {};
  if (std::find(methods.begin(), methods.end(), "GET") != methods.end())
    methods.emplace_back("HEAD");
  methods.emplace_back("OPTIONS");
  std::string out;
  for (auto& m : methods)
    out += (out.empty() ? "" : ", ") + m;
  return out;
}

void gateway::impl::serve(request& req, responder answer) {
  auto segs = split_path(req.path);
  auto allow = allowed(segs);
  if (allow.empty())
    return answer(error{404, "not_found", "no resource at " + req.path});
  if (req.method == "OPTIONS") {
    auto r = empty_response(204);
    r.with_header("Allow", allow);
    if (!cfg.cors_origin.empty()) {
      r.with_header("Access-Control-Allow-Methods", allow);
      auto asked = req.header("access-control-request-headers");
      r.with_header("Access-Control-Allow-Headers", asked.empty() ? "Content-Type" : asked);
      r.with_header("Access-Control-Max-Age", "86400");
    }
    return answer(std::move(r));
  }
  auto method = req.method == "HEAD" ? std::string{"GET"} : req.method;
  for (auto& r : routes) {
    if (r.method != method || !match(r, segs, &req.params))
      continue;
    if (r.where == route_thread::io || !workers) {
      r.h(req, answer); // exceptions: caught by the session
      return;
    }
    net::post(*workers, [&h = r.h, req = std::move(req), answer]() mutable {
      try {
        h(req, answer);
      } catch (const std::exception& e) { // a route's bug must not end the process
        answer(error{500, "internal_error", e.what()});
      } catch (...) {
        answer(error{500, "internal_error", "the route threw"});
      }
    });
    return;
  }
  auto r = error_response({405, "method_not_allowed", req.method + " is not allowed on " + req.path});
  r.with_header("Allow", allow);
  answer(std::move(r));
}

// -- gateway --------------------------------------------------------------------------

namespace {

/// The HTTPS context: TLS 1.2 or later, no anonymous, export or MD5 suites,
/// the certificate chain and its key checked against each other here, so
/// that a wrong file is one error at start, not a failure per connection.
caf::error load_tls(gateway::impl& g) {
  auto& files = g.cfg.tls;
  auto fail = [&](const std::string& what) {
    return caf::make_error(caf::sec::runtime_error, "HTTPS on " + g.cfg.address + ":" + std::to_string(g.cfg.port)
                                                       + ": " + what);
  };
  if (files.cert.empty() || files.key.empty())
    return fail("needs both a certificate and its key");
  beast::error_code ec;
  auto& ctx = g.tls.emplace(net::ssl::context::tls_server);
  ctx.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 | net::ssl::context::no_sslv3
                    | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use,
                  ec);
  if (!ec && SSL_CTX_set_cipher_list(ctx.native_handle(), "HIGH:!aNULL:!MD5") != 1)
    return fail("no cipher suite left");
  if (ctx.use_certificate_chain_file(files.cert, ec); ec)
    return fail("the certificate " + files.cert + " does not load: " + ec.message());
  if (ctx.use_private_key_file(files.key, net::ssl::context::pem, ec); ec) {
    // OpenSSL checks the key against the certificate as it loads it: say
    // which of the two went wrong.
    net::ssl::context alone{net::ssl::context::tls_server};
    beast::error_code alone_ec;
    if (alone.use_private_key_file(files.key, net::ssl::context::pem, alone_ec); !alone_ec)
      return fail("the key " + files.key + " does not match the certificate " + files.cert);
    return fail("the key " + files.key + " does not load: " + ec.message());
  }
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
    return fail("the key " + files.key + " does not match the certificate " + files.cert);
  return {};
}

} // namespace

gateway::gateway() : impl_(std::make_unique<impl>()) {}

gateway::~gateway() {
  stop();
}

void gateway::route(std::string method, std::string pattern, handler h, route_thread where) {
  impl_->routes.push_back({std::move(method), split_path(pattern), std::move(h), where});
}

caf::error gateway::start(gateway_config config) {
  auto& g = *impl_;
  g.cfg = std::move(config);
  beast::error_code ec;
  auto address = net::ip::make_address(g.cfg.address, ec);
  auto fail = [&](const std::string& what) {
    return caf::make_error(caf::sec::runtime_error,
                           "HTTP gateway on " + g.cfg.address + ":" + std::to_string(g.cfg.port) + ": " + what
                             + ": " + ec.message());
  };
  if (ec)
    return fail("bad address");
  if (g.cfg.tls.enabled())
    if (auto err = load_tls(g))
      return err;
  tcp::endpoint ep{address, g.cfg.port};
  g.acceptor.emplace(net::make_strand(g.io));
  g.accept_backoff.emplace(g.acceptor->get_executor());
  if (g.acceptor->open(ep.protocol(), ec); ec)
    return fail("open");
  if (g.acceptor->set_option(net::socket_base::reuse_address(true), ec); ec)
    return fail("reuse_address");
  if (g.acceptor->bind(ep, ec); ec)
    return fail("bind");
  if (g.acceptor->listen(net::socket_base::max_listen_connections, ec); ec)
    return fail("listen");
  g.bound_port = g.acceptor->local_endpoint().port();
  g.open->second = true;
  g.workers.emplace(static_cast<size_t>(std::max(1, g.cfg.workers)));
  g.accept();
  g.work.emplace(g.io.get_executor());
  for (int i = 0; i < std::max(1, g.cfg.threads); ++i)
    g.threads.emplace_back([&g] {
      // An exception that escapes a handler must not end the process (nor
      // this thread: the others would serve alone): report it, run on.
      for (;;) {
        try {
          g.io.run();
          return;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "sourcery http: a handler threw: %s\n", e.what());
        } catch (...) {
          std::fprintf(stderr, "sourcery http: a handler threw\n");
        }
      }
    });
  return {};
}

uint16_t gateway::port() const noexcept {
  return impl_->bound_port;
}

void gateway::stop() {
  auto& g = *impl_;
  {
    std::lock_guard guard{g.mtx};
    if (g.stopped)
      return;
    g.stopped = true;
    g.stop_requested = true;
    g.cv.notify_all();
  }
  if (g.threads.empty())
    return;
  g.draining = true;
  net::post(g.acceptor->get_executor(), [&g] {
    beast::error_code ignored;
    g.acceptor->close(ignored);
    g.accept_backoff->cancel();
  });
  auto each_session = [&g](auto f) {
    std::vector<std::shared_ptr<session_base>> all;
    {
      std::lock_guard guard{g.mtx};
      for (auto& w : g.sessions)
        if (auto s = w.lock())
          all.push_back(std::move(s));
    }
    for (auto& s : all)
      f(*s);
  };
  each_session([](session_base& s) { s.close_if_idle(); });
  {
    std::unique_lock guard{g.mtx};
    g.cv.wait_for(guard, g.cfg.drain_timeout, [&g] { return g.live == 0; });
  }
  each_session([](session_base& s) { s.close_now(); });
  {
    std::lock_guard guard{g.open->first};
    g.open->second = false;
  }
  if (g.signals) {
    net::post(g.io, [&g] {
      beast::error_code ignored;
      g.signals->cancel(ignored);
    });
  }
  // Let the closes run, then end the threads.
  std::unique_lock guard{g.mtx};
  g.cv.wait_for(guard, std::chrono::milliseconds{500}, [&g] { return g.live == 0; });
  guard.unlock();
  g.work.reset();
  g.io.stop();
  for (auto& t : g.threads)
    t.join();
  g.threads.clear();
  // Routes still running finish (each wait of theirs has a deadline);
  // queued ones are dropped: their connections are closed.
  if (g.workers) {
    g.workers->stop();
    g.workers->join();
  }
}

void gateway::stop_on_signals() {
  auto& g = *impl_;
  {
    std::lock_guard guard{g.mtx};
    if (!g.stopped && !g.threads.empty() && !g.signals) {
      g.signals.emplace(g.io, SIGINT, SIGTERM);
      g.signals->async_wait([&g](beast::error_code ec, int) {
        if (ec)
          return;
        std::lock_guard inner{g.mtx};
        g.stop_requested = true;
        g.cv.notify_all();
      });
    }
  }
}

void gateway::request_stop() {
  auto& g = *impl_;
  std::lock_guard guard{g.mtx};
  g.stop_requested = true;
  g.cv.notify_all();
}

void gateway::wait() {
  auto& g = *impl_;
  {
    std::unique_lock guard{g.mtx};
    g.cv.wait(guard, [&g] { return g.stop_requested || g.threads.empty(); });
  }
  stop();
}

} // namespace sourcery::http
