#pragma once

// Writing an event handler: plain C++, like an aggregate.
//
//     struct balances {
//       static constexpr const char* handler_name = "bank.balances";
//       using event = std::variant<account_opened, money_deposited>;
//
//       caf::error handle(const money_deposited& e, const sourcery::event_context& ctx) {
//         totals[ctx.stream_id] += e.amount;
//         return {};
//       }
//       ...
//     };
//
// The handler runs as a supervised actor on a persistent position in `$all`
// (its checkpoint, saved under "handler:<handler_name>" after every batch),
// so delivery is at-least-once: after a crash the events since the last
// checkpoint come again. Events of types not in `event` are passed over. A
// `handle` may return an error or throw; the handler's error policy (its
// options, or its own `on_error`) decides what happens next: retry with
// backoff, skip the event, or stop the handler — never a crash loop.

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include <caf/all.hpp>

#include "sourcery/actors/aggregate.hpp"
#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/subscription.hpp"
#include "sourcery/supervision/child_spec.hpp"

namespace sourcery {

/// What a handler sees of an event besides its data.
using event_context = persistence::recorded_event;

/// What to do about an event whose handling failed.
struct error_action {
  enum class kind : uint8_t { retry, skip, stop };
  kind what = kind::stop;
  std::chrono::milliseconds delay{0}; ///< before a retry

  static error_action retry(std::chrono::milliseconds delay) { return {kind::retry, delay}; }
  static error_action skip() { return {kind::skip, {}}; }
  static error_action stop() { return {kind::stop, {}}; }
};

/// The default decision for handlers without their own `on_error`: retry
/// with exponential backoff up to `max_retries` times, then `then`.
struct error_policy {
  uint32_t max_retries = 3;
  std::chrono::milliseconds initial_delay{50};
  std::chrono::milliseconds max_delay{5000};
  /// After the retries: skip the event or stop the handler.
  error_action::kind then = error_action::kind::stop;

  error_action decide(uint32_t failures) const {
    if (failures <= max_retries) {
      auto d = initial_delay * (1LL << std::min<uint32_t>(failures - 1, 20));
      return error_action::retry(std::min<std::chrono::milliseconds>(d, max_delay));
    }
    return then == error_action::kind::skip ? error_action::skip() : error_action::stop();
  }
};

/// Where a handler without a checkpoint begins.
enum class handler_start : uint8_t {
  origin,   ///< every stored event
  current,  ///< only events appended after it first starts
  position, ///< after `handler_options::start_position`
};

struct handler_options {
  handler_start start = handler_start::origin;
  uint64_t start_position = 0;
  error_policy on_error;
  /// Most events read per batch; the checkpoint is saved once per batch.
  size_t batch_size = 256;
};

/// An event handler: a name, the events it handles, and `handle` for each.
template <class H>
concept event_handler = requires {
  { H::handler_name } -> std::convertible_to<const char*>;
  typename H::event;
};

/// What the runtime and tools know of a running handler, shared between its
/// actor and observers (strong consistency waits on it).
class handler_status {
public:
  explicit handler_status(std::string name) : name_(std::move(name)) {}

  const std::string& name() const { return name_; }

  /// The position up to which every event has been handled (checkpointed).
  uint64_t position() const {
    std::lock_guard guard{mtx_};
    return position_;
  }

  /// Why the handler stopped for good (its policy said stop), if it did.
  caf::error stopped() const {
    std::lock_guard guard{mtx_};
    return stopped_;
  }

  /// Calls `f` once the handler has handled `pos`, or stopped (with the
  /// reason). Called at once if already so. `f` runs on the handler's actor
  /// thread or the caller's: keep it short.
  void when_reached(uint64_t pos, std::function<void(caf::error)> f) {
    std::unique_lock guard{mtx_};
    if (position_ >= pos || stopped_) {
      auto err = stopped_ && position_ < pos ? stopped_ : caf::error{};
      guard.unlock();
      f(std::move(err));
      return;
    }
    waiters_.push_back({pos, std::move(f)});
  }

  void advance(uint64_t pos) {
    std::vector<waiter> ready;
    {
      std::lock_guard guard{mtx_};
      position_ = std::max(position_, pos);
      auto keep = std::partition(waiters_.begin(), waiters_.end(), [&](const waiter& w) { return w.pos > position_; });
      std::move(keep, waiters_.end(), std::back_inserter(ready));
      waiters_.erase(keep, waiters_.end());
    }
    for (auto& w : ready)
      w.f({});
  }

  void stop(caf::error why) {
    std::vector<waiter> all;
    {
      std::lock_guard guard{mtx_};
      stopped_ = why;
      all.swap(waiters_);
    }
    for (auto& w : all)
      w.f(why);
  }

  /// A restarted handler (operator action) is running again.
  void resume() {
    std::lock_guard guard{mtx_};
    stopped_ = caf::error{};
  }

private:
  struct waiter {
    uint64_t pos;
    std::function<void(caf::error)> f;
  };
  std::string name_;
  mutable std::mutex mtx_;
  uint64_t position_ = 0;
  caf::error stopped_;
  std::vector<waiter> waiters_;
};

namespace detail {

using pull_atom = caf::atom_constant<caf::atom("hd_pull")>;
using head_atom = caf::atom_constant<caf::atom("hd_head")>;

template <class H>
struct handler_actor_state {
  std::unique_ptr<H> handler;
  persistence::event_store* store = nullptr;
  const persistence::event_registry* types = nullptr;
  std::shared_ptr<handler_status> status;
  handler_options options;
  std::string checkpoint_name;
  uint64_t position = 0;     ///< last handled position
  uint32_t failures = 0;     ///< consecutive failures on the event after `position`
  bool pulling = false;      ///< a pull is scheduled or running
  bool waiting_retry = false;
  static inline const char* name = "event_handler";
};

/// Runs `handle` for one event if `H` handles its type. Errors: decoding,
/// the handler's own error, or its exception as an error.
template <event_handler H>
caf::error handle_one(H& h, const persistence::event_registry& types, const persistence::recorded_event& rec) {
  caf::error result;
  bool matched = false;
  auto try_one = [&]<class E>(std::type_identity<E>) {
    if (matched || rec.type != E::type_name)
      return;
    matched = true;
    auto ev = types.unpack<E>(rec);
    if (!ev) {
      result = std::move(ev.error());
      return;
    }
    try {
      if constexpr (requires { { h.handle(*ev, rec) } -> std::convertible_to<caf::error>; })
        result = h.handle(*ev, rec);
      else if constexpr (requires { h.handle(*ev, rec); })
        h.handle(*ev, rec);
    } catch (const std::exception& e) {
      result = caf::make_error(caf::sec::runtime_error, std::string{"handler threw: "} + e.what());
    } catch (...) {
      result = caf::make_error(caf::sec::runtime_error, "handler threw a non-standard exception");
    }
  };
  [&]<class... Es>(std::type_identity<std::variant<Es...>>) {
    (try_one(std::type_identity<Es>{}), ...);
  }(std::type_identity<typename H::event>{});
  return result;
}

template <event_handler H>
error_action decide_on_error(H& h, const handler_options& opts, const caf::error& err,
                             const persistence::recorded_event& rec, uint32_t failures) {
  if constexpr (requires { { h.on_error(err, rec, failures) } -> std::convertible_to<error_action>; })
    return h.on_error(err, rec, failures);
  else
    return opts.on_error.decide(failures);
}

template <event_handler H>
caf::behavior handler_actor(caf::stateful_actor<handler_actor_state<H>>* self, std::function<std::unique_ptr<H>()> make,
                            persistence::event_store* store, const persistence::event_registry* types,
                            std::shared_ptr<handler_status> status, handler_options options) {
  auto& st = self->state;
  st.handler = make();
  st.store = store;
  st.types = types;
  st.status = status;
  st.options = options;
  st.checkpoint_name = std::string{"handler:"} + H::handler_name;
  status->resume();
  auto cp = store->load_checkpoint(st.checkpoint_name);
  if (!cp)
    throw std::runtime_error("handler " + std::string{H::handler_name} + " cannot read its checkpoint: "
                             + persistence::describe(cp.error()));
  if (*cp) {
    st.position = **cp;
  } else {
    st.position = options.start == handler_start::current    ? store->head_position()
                  : options.start == handler_start::position ? options.start_position
                                                             : 0;
    if (auto saved = store->save_checkpoint(st.checkpoint_name, st.position); !saved)
      throw std::runtime_error("handler " + std::string{H::handler_name} + " cannot save its checkpoint: "
                               + persistence::describe(saved.error()));
  }
  status->advance(st.position);
  st.pulling = true;
  self->send(self, pull_atom::value);

  // One batch: handle events after `position`, stop at the first failure
  // that the policy wants retried, checkpoint what was handled.
  auto pull = [self] {
    auto& st = self->state;
    st.pulling = false;
    if (st.waiting_retry)
      return;
    auto batch = st.store->read_all(st.position + 1, st.options.batch_size);
    if (!batch)
      throw std::runtime_error("handler " + std::string{H::handler_name} + " cannot read: "
                               + persistence::describe(batch.error()));
    uint64_t handled = st.position;
    for (const auto& rec : *batch) {
      auto err = handle_one(*st.handler, *st.types, rec);
      if (!err) {
        handled = rec.position;
        st.failures = 0;
        continue;
      }
      auto action = decide_on_error(*st.handler, st.options, err, rec, ++st.failures);
      if (action.what == error_action::kind::skip) {
        CAF_LOG_WARNING("handler skips event" << rec.position);
        handled = rec.position;
        st.failures = 0;
        continue;
      }
      // retry or stop: checkpoint what was handled before this event.
      if (handled > st.position) {
        if (auto saved = st.store->save_checkpoint(st.checkpoint_name, handled); !saved)
          throw std::runtime_error("handler checkpoint: " + persistence::describe(saved.error()));
        st.position = handled;
        st.status->advance(handled);
      }
      if (action.what == error_action::kind::retry) {
        st.waiting_retry = true;
        self->delayed_send(self, action.delay, pull_atom::value, true);
        return;
      }
      auto why = caf::make_error(caf::sec::runtime_error, std::string{"handler "} + H::handler_name
                                                              + " stopped at event " + std::to_string(rec.position)
                                                              + " (" + rec.type + "): " + caf::to_string(err));
      st.status->stop(why);
      // A stop is final until an operator restarts it: exit as a shutdown,
      // which a transient child spec does not restart.
      self->quit(caf::exit_reason::user_shutdown);
      return;
    }
    if (handled > st.position) {
      if (auto saved = st.store->save_checkpoint(st.checkpoint_name, handled); !saved)
        throw std::runtime_error("handler checkpoint: " + persistence::describe(saved.error()));
      st.position = handled;
      st.status->advance(handled);
    }
    if (batch->size() == st.options.batch_size) {
      st.pulling = true;
      self->send(self, pull_atom::value);
    }
  };
  return {
    [pull](pull_atom) { pull(); },
    [self, pull](pull_atom, bool) { // a retry's timer
      self->state.waiting_retry = false;
      pull();
    },
    [self](head_atom, uint64_t head) { // new events in the store
      auto& st = self->state;
      if (head > st.position && !st.pulling && !st.waiting_retry) {
        st.pulling = true;
        self->send(self, pull_atom::value);
      }
    },
  };
}

} // namespace detail

/// The child spec of handler `H`: transient, so a crash restarts it (it
/// resumes from its checkpoint) while a stop decided by its error policy
/// does not. `make` builds a fresh handler at every (re)start.
template <event_handler H>
supervision::child_spec handler_child_spec(std::function<std::unique_ptr<H>()> make, persistence::event_store* store,
                                           const persistence::event_registry* types,
                                           std::shared_ptr<handler_status> status, handler_options options,
                                           std::function<void(const caf::actor&)> started = {}) {
  supervision::child_spec spec;
  spec.id = std::string{"handler:"} + H::handler_name;
  spec.restart = supervision::restart_type::transient;
  spec.start = [=](caf::actor_system& sys, const caf::message&) -> caf::expected<caf::actor> {
    caf::actor a = sys.spawn(detail::handler_actor<H>, make, store, types, status, options);
    if (started)
      started(a);
    return a;
  };
  return spec;
}

} // namespace sourcery
