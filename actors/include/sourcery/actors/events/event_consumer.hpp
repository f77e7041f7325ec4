#pragma once

// What event handlers and projectors share: a supervised actor that reads
// `$all` after its checkpoint in batches, keeps the events its subscription
// includes, hands them to its consumer
// (which commits the effects and the new checkpoint), and on a failure asks
// the error policy whether to retry the event after a delay, skip it, or
// stop — so a poison event never crash-loops the tree.

#include <algorithm>
#include <chrono>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <caf/all.hpp>

#include "sourcery/actors/events/event_context.hpp"
#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/event_store.hpp"
#include "sourcery/supervision/child_spec.hpp"

namespace sourcery {


/// What to do about an event whose handling failed.
struct error_action {
  enum class kind : uint8_t { retry, skip, stop };
  kind what = kind::stop;
  std::chrono::milliseconds delay{0}; ///< before a retry

  static error_action retry(std::chrono::milliseconds delay) { return {kind::retry, delay}; }
  static error_action skip() { return {kind::skip, {}}; }
  static error_action stop() { return {kind::stop, {}}; }
};

/// One failure of a handler (or process manager) and what was decided about
/// it: for observers (the runtime logs it).
struct handler_failure {
  std::string handler;
  const persistence::recorded_event& event;
  const caf::error& error;
  uint32_t failures = 0; ///< consecutive, on this event
  error_action action;
};

/// The default decision for handlers without their own `on_error`: retry
/// with exponential backoff up to `max_retries` times, then `then`.
struct error_policy {
  uint32_t max_retries = 3;
  std::chrono::milliseconds initial_delay{50};
  std::chrono::milliseconds max_delay{5000};
  /// After the retries: skip the event or stop the handler.
  error_action::kind then = error_action::kind::stop;
  /// Hears of every failure and its decision, whoever decided (this policy
  /// or the handler's own `on_error`). Runs on the handler's thread.
  std::function<void(const handler_failure&)> observer;
  /// Hears of each failure of the handler's own storage (reading `$all`,
  /// its read model or checkpoint: a full disk, an I/O error). Those are not
  /// the event's fault: they are retried with this policy's backoff, without
  /// end, until the cause goes; `retry_in` is the delay before the next try.
  std::function<void(const std::string& handler, const caf::error& error, uint32_t failures,
                     std::chrono::milliseconds retry_in)>
    storage_observer;

  /// The delay before try `failures + 1` (exponential, capped at `max_delay`).
  std::chrono::milliseconds backoff(uint32_t failures) const {
    auto d = initial_delay * (1LL << std::min<uint32_t>(failures > 0 ? failures - 1 : 0, 20));
    return std::min<std::chrono::milliseconds>(d, max_delay);
  }

  error_action decide(uint32_t failures) const {
    if (failures <= max_retries)
      return error_action::retry(backoff(failures));
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
  /// The events it receives: all (default), one stream or one category.
  /// A handler type may say instead `static sourcery::subscription subscribe_to()`.
  sourcery::subscription subscribe_to;
  handler_start start = handler_start::origin;
  uint64_t start_position = 0;
  error_policy on_error;
  /// Most events read per batch; the checkpoint is saved once per batch.
  size_t batch_size = 256;
  /// Event handlers only: handle a batch's events on this many threads,
  /// partitioned by key (the handler's `partition_key(ctx)`, else the
  /// stream id), in order within a key. Each partition has its own handler
  /// instance. After a failure, events the other partitions handled past it
  /// come again (at-least-once).
  size_t concurrency = 1;
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

  /// It stopped for good (`why`), at the event at position `at` when one
  /// is to blame.
  void stop(caf::error why, std::optional<uint64_t> at = std::nullopt) {
    std::vector<waiter> all;
    {
      std::lock_guard guard{mtx_};
      stopped_ = why;
      stopped_at_ = at;
      all.swap(waiters_);
    }
    for (auto& w : all)
      w.f(why);
  }

  /// The handler starts over from `to` (a rebuild: the origin): its
  /// position goes back.
  void rewind(uint64_t to = 0) {
    std::lock_guard guard{mtx_};
    position_ = to;
  }

  /// A restarted handler (operator action) is running again.
  void resume() {
    std::lock_guard guard{mtx_};
    stopped_ = caf::error{};
    stopped_at_.reset();
  }

  /// The position of the event it stopped on, if it stopped on one.
  std::optional<uint64_t> stopped_at() const {
    std::lock_guard guard{mtx_};
    return stopped_at_;
  }

  /// The failure of its own storage it is retrying (none once it commits
  /// again): why a strong dispatch waiting for it times out.
  caf::error storage_trouble() const {
    std::lock_guard guard{mtx_};
    return trouble_;
  }
  void set_storage_trouble(caf::error err) {
    std::lock_guard guard{mtx_};
    trouble_ = std::move(err);
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
  std::optional<uint64_t> stopped_at_;
  caf::error trouble_;
  std::vector<waiter> waiters_;
};

namespace detail {

/// The failures of a consumer's own storage (a full disk, an I/O error):
/// not the event's fault, and a restart would fail the same way, so they
/// are retried with the policy's backoff until the cause goes. Shared by
/// handlers, projections and process managers.
class storage_retry {
public:
  /// Records a failure: the status shows it, the observer hears of it.
  /// Returns the delay before the next try.
  std::chrono::milliseconds failed(const caf::error& err, const std::string& who, handler_status& status,
                                   const error_policy& policy) {
    auto delay = policy.backoff(++failures_);
    status.set_storage_trouble(err);
    if (policy.storage_observer)
      policy.storage_observer(who, err, failures_, delay);
    return delay;
  }
  /// The storage works again.
  void ok(handler_status& status) {
    if (failures_ > 0) {
      failures_ = 0;
      status.set_storage_trouble({});
    }
  }

private:
  uint32_t failures_ = 0; ///< consecutive
};

using pull_atom = caf::atom_constant<caf::atom("hd_pull")>;
using head_atom = caf::atom_constant<caf::atom("hd_head")>;
using start_atom = caf::atom_constant<caf::atom("hd_start")>;
/// An operator's request: handle the event at a position once more, alone
/// (one it skipped, now parked), beside its checkpoint, which stays.
using replay_atom = caf::atom_constant<caf::atom("hd_replay")>;

/// What a consumer did with a batch: the position it committed up to, and
/// the event it failed on (effects before it committed, its own not).
struct batch_outcome {
  uint64_t committed = 0;
  const event_context* failed = nullptr;
  caf::error error;
  /// The consumer's own storage failed (read model, checkpoint): not the
  /// event's fault; retried with backoff from `committed`.
  caf::error storage;
  /// `committed` is behind the position the batch started from: the
  /// consumer's checkpoint was moved back under it (a rebuild as of an
  /// earlier moment, an operator's reset); it goes on from there.
  bool rewound = false;
};

// A consumer provides:
//   std::string name() const;
//   caf::expected<std::optional<uint64_t>> load_checkpoint();
//   caf::error save_checkpoint(uint64_t position);
//   batch_outcome consume(const std::vector<persistence::recorded_event>& batch, uint64_t position);
//   error_action decide(const caf::error&, const persistence::recorded_event&, uint32_t failures);
// and may provide, to handle one event again alone (a parked one):
//   caf::error replay(const event_context&);
template <class Consumer>
struct consumer_state {
  std::unique_ptr<Consumer> consumer;
  persistence::event_store* store = nullptr;
  std::shared_ptr<handler_status> status;
  handler_options options;
  uint64_t position = 0; ///< committed
  uint32_t failures = 0; ///< consecutive, on the event after `position`
  storage_retry storage;
  const stream_prefixes* prefixes = nullptr;
  bool started = false; ///< its checkpoint is read (a storage failure delays that)
  bool pulling = false;
  bool waiting_retry = false;
  std::vector<persistence::recorded_event> read;  ///< reused from batch to batch
  std::vector<event_context> subscribed;          ///< what a narrower subscription takes of `read`
  static inline const char* name = "event_consumer";
};

/// The subscription of consumer type `T`: the options', unless they
/// subscribe to all and `T` names its own (`static subscription subscribe_to()`).
template <class T>
void subscribe_as_declared(handler_options& options) {
  if constexpr (requires { { T::subscribe_to() } -> std::convertible_to<subscription>; })
    if (options.subscribe_to.what == subscription::kind::all)
      options.subscribe_to = T::subscribe_to();
}

/// The events of `st.read` its subscription includes, each knowing its
/// aggregate's prefix: `st.read` itself when it subscribes to all, else
/// those events moved to `st.subscribed` (`give_back` returns them).
template <class State>
const std::vector<event_context>& take_subscribed(State& st) {
  for (auto& rec : st.read)
    rec.prefix_length = st.prefixes != nullptr ? st.prefixes->prefix_length(rec.stream_id) : 0;
  const auto& sub = st.options.subscribe_to;
  if (sub.what == subscription::kind::all)
    return st.read;
  st.subscribed.clear();
  for (auto& rec : st.read)
    if (sub.includes(rec.stream_id))
      st.subscribed.push_back(std::move(rec));
  return st.subscribed;
}

/// Moves the events of the last narrower subscription back into `st.read`,
/// so the next read reuses their buffers.
template <class State>
void give_back(State& st) {
  for (size_t i = 0; i < st.subscribed.size() && i < st.read.size(); ++i)
    st.read[i] = std::move(st.subscribed[i]);
  st.subscribed.clear();
}

/// Where a consumer with no checkpoint starts, as its options say
/// (`start`, `start_position`): handlers and process managers alike.
template <class Options>
uint64_t initial_position(const Options& options, const persistence::event_store& store) {
  return options.start == handler_start::current    ? store.head_position()
         : options.start == handler_start::position ? options.start_position
                                                    : 0;
}

template <class Consumer>
[[noreturn]] void consumer_crash(const Consumer& c, const std::string& what, const caf::error& err) {
  throw std::runtime_error(c.name() + " " + what + ": " + caf::to_string(err));
}

template <class Consumer>
caf::behavior consumer_actor(caf::stateful_actor<consumer_state<Consumer>>* self,
                             std::function<std::unique_ptr<Consumer>()> make, persistence::event_store* store,
                             std::shared_ptr<handler_status> status, handler_options options,
                             const stream_prefixes* prefixes) {
  auto& st = self->state;
  st.consumer = make();
  st.store = store;
  st.status = status;
  st.options = options;
  st.prefixes = prefixes;
  // The handler's own start-up, at every (re)start: a failure is a crash
  // its supervisor answers with a restart -- unless its storage is away (a
  // database failing over): restarts would fail the same way until the
  // supervisor gives up, so it waits, with the policy's backoff, instead.
  auto start = [self] {
    auto& st = self->state;
    auto wait_or_crash = [&](const char* what, const caf::error& err) {
      using persistence::store_errc;
      auto code = persistence::code_of(err);
      if (code != store_errc::unavailable && code != store_errc::timeout && code != store_errc::fenced)
        consumer_crash(*st.consumer, what, err);
      auto delay = st.storage.failed(err, st.consumer->name(), *st.status, st.options.on_error);
      self->delayed_send(self, delay, start_atom::value);
    };
    if (auto err = st.consumer->init())
      return wait_or_crash("failed in init", err);
    st.status->resume();
    auto cp = st.consumer->load_checkpoint();
    if (!cp)
      return wait_or_crash("cannot read its checkpoint", cp.error());
    if (*cp) {
      st.position = **cp;
    } else {
      st.position = initial_position(st.options, *st.store);
      if (auto err = st.consumer->save_checkpoint(st.position))
        return wait_or_crash("cannot save its checkpoint", err);
    }
    st.storage.ok(*st.status);
    st.started = true;
    st.status->advance(st.position);
    st.pulling = true;
    self->send(self, pull_atom::value);
  };
  start();

  auto committed = [self](uint64_t pos) {
    auto& st = self->state;
    if (pos > st.position) {
      st.position = pos;
      st.failures = 0;
      st.status->advance(pos);
    }
  };
  // Its storage failed (a full disk, an I/O error): not the event's fault,
  // and restarting would fail the same way until the supervisor gives up.
  // Try again later, with backoff, until the cause goes.
  auto storage_failed = [self](const caf::error& err) {
    auto& st = self->state;
    auto delay = st.storage.failed(err, st.consumer->name(), *st.status, st.options.on_error);
    st.waiting_retry = true;
    self->delayed_send(self, delay, pull_atom::value, true);
  };
  auto storage_ok = [self] { self->state.storage.ok(*self->state.status); };
  // One batch after `position`; on a failure, the policy decides.
  auto pull = [self, committed, storage_failed, storage_ok] {
    auto& st = self->state;
    st.pulling = false;
    if (st.waiting_retry)
      return;
    give_back(st);
    if (auto err = st.store->read_all_into(st.position + 1, st.options.batch_size, st.read))
      return storage_failed(err);
    if (st.read.empty())
      return storage_ok();
    const uint64_t through = st.read.back().position;
    const size_t read = st.read.size();
    const auto& batch = take_subscribed(st);
    auto out = st.consumer->consume(batch, st.position, through);
    if (!out.storage)
      storage_ok(); // before `committed` wakes anyone who looks
    if (out.rewound) {
      st.position = out.committed;
      st.failures = 0;
      st.status->rewind(out.committed);
    }
    committed(out.committed);
    if (out.storage)
      return storage_failed(out.storage);
    if (out.failed != nullptr) {
      const auto& rec = *out.failed;
      auto action = st.consumer->decide(out.error, rec, ++st.failures);
      if (st.options.on_error.observer)
        st.options.on_error.observer(handler_failure{st.consumer->name(), rec, out.error, st.failures, action});
      if (action.what == error_action::kind::retry) {
        st.waiting_retry = true;
        self->delayed_send(self, action.delay, pull_atom::value, true);
        return;
      }
      if (action.what == error_action::kind::skip) {
        if (auto err = st.consumer->save_checkpoint(rec.position)) {
          --st.failures; // decided again after the retry, not counted twice
          return storage_failed(err);
        }
        committed(rec.position);
      } else {
        auto why = caf::make_error(caf::sec::runtime_error, st.consumer->name() + " stopped at event "
                                                              + std::to_string(rec.position) + " (" + rec.type
                                                              + "): " + caf::to_string(out.error));
        st.status->stop(why, rec.position);
        // Final until an operator restarts it: exit as a shutdown, which a
        // transient child spec does not restart.
        self->quit(caf::exit_reason::user_shutdown);
        return;
      }
    }
    // Read on at once after a failure, a full batch, or a batch committed
    // other than up to its end (another process moved the checkpoint).
    if (out.failed != nullptr || read == st.options.batch_size || st.position != through) {
      st.pulling = true;
      self->send(self, pull_atom::value);
    }
  };
  return {
    [start](start_atom) { start(); },
    [pull](pull_atom) { pull(); },
    [self, pull](pull_atom, bool) { // a retry's timer
      self->state.waiting_retry = false;
      pull();
    },
    [self](replay_atom, uint64_t position) -> caf::result<replay_atom> {
      auto& st = self->state;
      if constexpr (requires(Consumer& c, const event_context& e) { { c.replay(e) } -> std::convertible_to<caf::error>; }) {
        std::vector<persistence::recorded_event> one;
        if (auto err = st.store->read_all_into(position, 1, one))
          return err;
        if (one.empty() || one.front().position != position)
          return persistence::make_error(persistence::store_errc::invalid_argument,
                                         "no event at position " + std::to_string(position));
        one.front().prefix_length = st.prefixes != nullptr ? st.prefixes->prefix_length(one.front().stream_id) : 0;
        if (!st.options.subscribe_to.includes(one.front().stream_id))
          return persistence::make_error(persistence::store_errc::invalid_argument,
                                         st.consumer->name() + " is not subscribed to stream " + one.front().stream_id);
        if (auto err = st.consumer->replay(one.front()))
          return err;
        return replay_atom::value;
      } else {
        (void) position;
        return persistence::make_error(persistence::store_errc::invalid_argument,
                                       st.consumer->name() + " handles events only in order: reset it instead");
      }
    },
    [self](head_atom, uint64_t head) { // new events in the store
      auto& st = self->state;
      if (st.started && head > st.position && !st.pulling && !st.waiting_retry) {
        st.pulling = true;
        self->send(self, pull_atom::value);
      }
    },
  };
}

} // namespace detail

/// The child spec of a consumer: transient, so a crash restarts it (it
/// resumes from its checkpoint) while a stop decided by its error policy
/// does not. `make` builds a fresh consumer at every (re)start.
template <class Consumer>
supervision::child_spec consumer_child_spec(std::string id, std::function<std::unique_ptr<Consumer>()> make,
                                            persistence::event_store* store, std::shared_ptr<handler_status> status,
                                            handler_options options,
                                            std::function<void(const caf::actor&)> started = {},
                                            const stream_prefixes* prefixes = nullptr) {
  supervision::child_spec spec;
  spec.id = std::move(id);
  spec.restart = supervision::restart_type::transient;
  spec.start = [=](caf::actor_system& sys, const caf::message&) -> caf::expected<caf::actor> {
    // Detached: a consumer blocks on reads and durable commits, which must
    // not hold up one of the scheduler's few threads.
    caf::actor a = sys.spawn<caf::detached>(detail::consumer_actor<Consumer>, make, store, status, options,
                                            prefixes);
    if (started)
      started(a);
    return a;
  };
  return spec;
}

/// Runs `handle` on the event if its type is one of `Variant`'s: `f(E)` is
/// called with the decoded event. Returns false if the type is not listed.
/// Errors of decoding go to `err`.
template <class Variant, class F>
bool visit_event(const persistence::event_registry& types, const persistence::recorded_event& rec, caf::error& err,
                 F&& f) {
  bool matched = false;
  auto try_one = [&]<class E>(std::type_identity<E>) {
    if (matched || rec.type != E::type_name)
      return;
    matched = true;
    auto ev = types.unpack<E>(rec);
    if (!ev) {
      err = std::move(ev.error());
      return;
    }
    try {
      err = f(*ev);
    } catch (const std::exception& e) {
      err = caf::make_error(caf::sec::runtime_error, std::string{"threw: "} + e.what());
    } catch (...) {
      err = caf::make_error(caf::sec::runtime_error, "threw a non-standard exception");
    }
  };
  [&]<class... Es>(std::type_identity<std::variant<Es...>>) {
    (try_one(std::type_identity<Es>{}), ...);
  }(std::type_identity<Variant>{});
  return matched;
}

} // namespace sourcery
