#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pg_connection.hpp"

namespace sourcery::persistence::pg {

/// Connections for reads and small writes, opened on demand up to `size`,
/// each set up by `setup` once. A caller that finds all of them busy waits
/// (until its deadline) for one to come back.
class pool {
public:
  using setup_fn = std::function<caf::error(connection&, deadline)>;

  pool(std::string conninfo, size_t size, std::chrono::milliseconds connect_timeout, setup_fn setup);

  /// A connection on loan; goes back to the pool when destroyed, unless it
  /// broke.
  class lease {
  public:
    lease(pool* owner, connection c) : owner_(owner), conn_(std::move(c)) {}
    lease(lease&& other) noexcept : owner_(other.owner_), conn_(std::move(other.conn_)) { other.owner_ = nullptr; }
    lease& operator=(lease&&) = delete;
    ~lease();
    connection& operator*() { return conn_; }
    connection* operator->() { return &conn_; }

  private:
    pool* owner_;
    connection conn_;
  };

  /// Errors: those of `connection::open`, timeout when every connection
  /// stays busy until `until`, store_closed after `close`.
  caf::expected<lease> take(deadline until);

  /// Runs `f` on a pooled connection; once more on a fresh one if the
  /// connection broke (reads are idempotent; a server restart drops every
  /// pooled connection at once).
  template <class F>
  auto with(deadline until, F&& f) -> decltype(f(std::declval<connection&>())) {
    for (int attempt = 0;; ++attempt) {
      auto c = take(until);
      if (!c)
        return c.error();
      auto r = f(**c);
      if (attempt == 0 && !(*c)->ok())
        continue;
      return r;
    }
  }

  /// Closes the idle connections and refuses further `take`s.
  void close();

  uint64_t reconnects() const;

private:
  void give_back(connection c);

  const std::string conninfo_;
  const size_t size_;
  const std::chrono::milliseconds connect_timeout_;
  const setup_fn setup_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<connection> idle_;
  size_t open_ = 0; // idle and lent
  uint64_t opened_ = 0;
  bool closed_ = false;
  /// A connection attempt that did not finish in its caller's time: the
  /// next caller carries it on (until `connect_timeout` after it began)
  /// rather than leaving it to the server's queue and starting another.
  std::optional<connection> pending_;
  clock::time_point pending_since_{};
};

} // namespace sourcery::persistence::pg
