#include "pg_pool.hpp"

#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::pg {

pool::pool(std::string conninfo, size_t size, std::chrono::milliseconds connect_timeout, setup_fn setup)
  : conninfo_(std::move(conninfo)), size_(std::max<size_t>(size, 1)), connect_timeout_(connect_timeout),
    setup_(std::move(setup)) {}

pool::lease::~lease() {
  if (owner_)
    owner_->give_back(std::move(conn_));
}

caf::expected<pool::lease> pool::take(deadline until) {
  {
    std::unique_lock guard{mtx_};
    for (;;) {
      if (closed_)
        return make_error(store_errc::store_closed, "the event store is closed");
      if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        return lease{this, std::move(c)};
      }
      if (open_ < size_)
        break;
      if (cv_.wait_until(guard, until) == std::cv_status::timeout && idle_.empty() && open_ >= size_)
        return make_error(store_errc::timeout, "every database connection of the pool stayed busy");
    }
    ++open_;
  }
  // The attempt a caller before gave up on, if it is still young enough;
  // else (or if it fails) a fresh one.
  std::optional<connection> c;
  auto since = clock::now();
  {
    std::lock_guard guard{mtx_};
    if (pending_ && clock::now() < pending_since_ + connect_timeout_) {
      c = std::move(*pending_);
      since = pending_since_;
    }
    pending_.reset();
  }
  caf::error err;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!c) {
      since = clock::now();
      auto started = connection::start(conninfo_);
      if (!started) {
        err = started.error();
        break;
      }
      c = std::move(*started);
    }
    err = c->carry_on(std::min(until, since + connect_timeout_));
    if (!err || clock::now() >= until)
      break; // connected, or out of the caller's time (the attempt may be carried on)
    c.reset(); // the carried attempt failed or aged out (a server restarted meanwhile): a fresh one
  }
  if (!err && setup_)
    err = setup_(*c, std::min(until, clock::now() + connect_timeout_));
  if (err) {
    std::lock_guard guard{mtx_};
    --open_;
    if (c && c->connecting() && clock::now() < since + connect_timeout_ && !pending_ && !closed_) {
      pending_ = std::move(*c);
      pending_since_ = since;
    }
    cv_.notify_one();
    return err;
  }
  {
    std::lock_guard guard{mtx_};
    ++opened_;
  }
  return lease{this, std::move(*c)};
}


void pool::give_back(connection c) {
  std::lock_guard guard{mtx_};
  // A connection still draining a cancelled statement is kept: the next
  // taker collects that answer first (connection::exec).
  if (c.ok() && !closed_ && (c.draining() || PQtransactionStatus(c.raw()) == PQTRANS_IDLE))
    idle_.push_back(std::move(c));
  else
    --open_;
  cv_.notify_one();
}

void pool::close() {
  std::vector<connection> dropped;
  {
    std::lock_guard guard{mtx_};
    closed_ = true;
    dropped.swap(idle_);
    open_ -= dropped.size();
    pending_.reset();
  }
  cv_.notify_all();
}

uint64_t pool::reconnects() const {
  std::lock_guard guard{mtx_};
  return opened_ > size_ ? opened_ - size_ : 0;
}

} // namespace sourcery::persistence::pg
