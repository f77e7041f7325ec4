// Strong consistency: a dispatch answered once the handlers it waits for
// have handled its events (or one failed, or the deadline passed). The head
// watcher wakes handlers on new events, follows handlers running in other
// processes, and expires waits.

#include "sourcery/runtime/application.hpp"

#include <algorithm>
#include <thread>

#include "strong_wait.hpp"

namespace sourcery {

void application::complete_strong(const std::shared_ptr<dispatch_options>& opts, caf::expected<dispatch_result> r,
                                  std::function<void(caf::expected<dispatch_result>)> done,
                                  std::chrono::steady_clock::time_point t0, std::shared_ptr<const dispatch_context> ctx) {
  if (!r || !r->accepted || r->last_position == 0 || opts->consistency_level != consistency::strong)
    return finish(t0, std::move(r), done, ctx.get());
  std::vector<std::shared_ptr<handler_status>> statuses;
  std::string unknown; // a handler named in `consistent_with` that does not run
  {
    std::lock_guard guard{handlers_mtx_};
    if (opts->consistent_with.empty()) {
      for (auto& [name, h] : handlers_)
        if (h.strong)
          statuses.push_back(h.status);
    } else {
      for (auto& name : opts->consistent_with) {
        auto i = handlers_.find(name);
        if (i == handlers_.end()) {
          unknown = name;
          break;
        }
        statuses.push_back(i->second.status);
      }
    }
  }
  // The caller's code runs outside our locks.
  if (!unknown.empty())
    return finish(t0,
                  make_error(dispatch_errc::consistency_timeout,
                             "the events were stored but no handler is named " + unknown),
                  done, ctx.get());
  if (statuses.empty())
    return finish(t0, std::move(r), done, ctx.get());
  auto wait = std::make_shared<strong_wait>();
  wait->left = statuses.size();
  wait->deadline = std::chrono::steady_clock::now() + opts->consistency_timeout;
  wait->result = std::move(*r);
  wait->handlers = statuses;
  wait->done = [this, t0, ctx, done = std::move(done)](caf::expected<dispatch_result> answer) {
    finish(t0, std::move(answer), done, ctx.get());
  };
  {
    std::lock_guard guard{strong_mtx_};
    strong_waits_.push_back(wait);
  }
  uint64_t pos = wait->result.last_position;
  for (auto& s : statuses)
    s->when_reached(pos, [wait, name = s->name()](caf::error err) {
      if (err)
        wait->fail("handler " + name + " has stopped: " + describe_error(err));
      else
        wait->reached();
    });
}

void application::watch_head(uint64_t seen) {
  bool remote_strong = true; // until a look finds none
  while (watching_.load()) {
    bool anyone;
    {
      std::scoped_lock guard{handlers_mtx_, strong_mtx_};
      anyone = !handlers_.empty() || !strong_waits_.empty();
    }
    bool waiting;
    {
      std::lock_guard guard{strong_mtx_};
      waiting = !strong_waits_.empty();
    }
    // Without handlers nobody needs waking: do not wake up on every commit.
    // Strong dispatches waiting for handlers that run elsewhere: their
    // checkpoints are read every few milliseconds.
    auto period = std::chrono::milliseconds{waiting && remote_strong ? 3 : 20};
    if (anyone)
      store_->wait_for_position(seen + 1, period);
    else
      std::this_thread::sleep_for(period);
    if (waiting)
      remote_strong = follow_remote_handlers();
    uint64_t head = store_->head_position();
    if (head > seen) {
      seen = head;
      std::lock_guard guard{handlers_mtx_};
      for (auto& [name, h] : handlers_)
        if (h.actor)
          caf::anon_send(h.actor, detail::head_atom::value, head);
    }
    std::vector<std::shared_ptr<strong_wait>> expired;
    {
      auto now = std::chrono::steady_clock::now();
      std::lock_guard guard{strong_mtx_};
      auto keep = std::partition(strong_waits_.begin(), strong_waits_.end(), [&](const auto& w) {
        return !w->settled() && w->deadline > now;
      });
      std::move(keep, strong_waits_.end(), std::back_inserter(expired));
      strong_waits_.erase(keep, strong_waits_.end());
    }
    for (auto& w : expired)
      w->fail("the handlers did not handle them within the consistency timeout");
  }
}

} // namespace sourcery
