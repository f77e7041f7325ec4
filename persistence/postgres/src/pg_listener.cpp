// The listener: one dedicated connection per store LISTENs for the NOTIFY
// each committed batch sends, and wakes the subscribers. NOTIFY is only a
// hint (nothing is queued for a session that was not listening): on every
// (re)connect it LISTENs first, then reads the head; a slow poll covers a
// silent connection.

#include <poll.h>
#include <unistd.h>

#include <charconv>

#include "postgres_state.hpp"
#include "sourcery/persistence/hex.hpp"

namespace sourcery::persistence::detail {

namespace {

// Waits up to `timeout` for the connection's socket or the wake fd; returns
// 1 if the socket is readable, 0 on timeout, -1 if woken to stop.
std::string from_hex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(hex_value(hex[i]) * 16 + hex_value(hex[i + 1])));
  return out;
}

int wait_two(int sock, int wake, std::chrono::milliseconds timeout) {
  pollfd fds[2] = {{sock, POLLIN, 0}, {wake, POLLIN, 0}};
  int n = ::poll(fds, 2, static_cast<int>(timeout.count()));
  if (n > 0 && (fds[1].revents & POLLIN))
    return -1;
  return n > 0 ? 1 : 0;
}

} // namespace

void postgres_state::probe_started() {
  probe_since = std::chrono::steady_clock::now().time_since_epoch().count();
}

void postgres_state::probe_ended(caf::error outcome) {
  probe_since = 0;
  std::lock_guard guard{health_mtx};
  unreachable = std::move(outcome);
}

void postgres_state::run_listener() {
  auto backoff = std::chrono::milliseconds{100};
  bool first = true;
  auto pause = [&](std::chrono::milliseconds d) {
    pollfd p{wake_fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(d.count()));
  };
  while (!listener_stop) {
    probe_started();
    auto c = pg::connection::open(options.conninfo, pg::clock::now() + options.connect_timeout);
    if (!c) {
      probe_ended(c.error());
      pause(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds{2000});
      continue;
    }
    if (auto err = setup(*c, op_deadline(), "listener")) {
      probe_ended(err);
      pause(backoff);
      continue;
    }
    if (!first)
      ++reconnects;
    first = false;
    backoff = std::chrono::milliseconds{100};
    auto head_query = sql("SELECT position FROM @.log_head");
    auto read_head = [&]() -> bool {
      probe_started();
      auto r = c->exec(head_query, op_deadline());
      probe_ended(r ? caf::error{} : r.error());
      if (!r)
        return false;
      if (r->rows() == 1 && raise_head(static_cast<uint64_t>(r->int8(0, 0))))
        owner_notify();
      return true;
    };
    // LISTEN first, then catch up: a commit between the two is seen either way.
    // Forgotten subjects announced while not listening are not known: every
    // cached key goes, and is read again when needed.
    owner->forgotten_elsewhere("");
    if (!c->exec("LISTEN " + pg::quote_ident(channel), op_deadline())
        || !c->exec("LISTEN " + pg::quote_ident(forget_channel), op_deadline()) || !read_head()) {
      pause(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds{2000});
      continue;
    }
    for (;;) {
      if (listener_stop)
        return;
      int w = wait_two(c->socket(), wake_fd, options.poll_interval);
      if (w < 0)
        return;
      if (w == 0) {
        // The slow poll; also finds a dead connection. One that only timed
        // out is kept (it drains the cancelled poll before the next).
        if (!read_head() && !c->ok())
          break;
        continue;
      }
      if (PQconsumeInput(c->raw()) == 0) {
        probe_ended(make_error(store_errc::unavailable,
                               std::string{"the listener's connection broke: "} + PQerrorMessage(c->raw())));
        break;
      }
      bool rose = false;
      while (PGnotify* n = PQnotifies(c->raw())) {
        if (n->relname == forget_channel) { // a subject forgotten, by this node or another
          owner->forgotten_elsewhere(from_hex(n->extra));
          PQfreemem(n);
          continue;
        }
        ++notifications;
        uint64_t pos = 0;
        std::string_view extra{n->extra};
        std::from_chars(extra.data(), extra.data() + extra.size(), pos);
        rose |= raise_head(pos);
        PQfreemem(n);
      }
      if (rose)
        owner_notify();
    }
  }
}

} // namespace sourcery::persistence::detail
