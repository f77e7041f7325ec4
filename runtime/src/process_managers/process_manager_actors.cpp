// The actors behind every process manager (see process_manager.hpp), compiled
// once: a router that reads `$all` after the saved position and hands each
// event to the instances it concerns, and the instances. What they need of
// the user's type comes through `process_type` and `process_model`
// (detail/process_model.hpp). Each step is a named function of the actor it
// runs in.

#include "sourcery/runtime/process_managers/detail/process_manager_actors.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <set>

#include "sourcery/persistence/projection_store.hpp"

namespace sourcery::detail {
namespace {

using pm_event_atom = caf::atom_constant<caf::atom("pm_event")>;
using pm_done_atom = caf::atom_constant<caf::atom("pm_done")>;
using pm_result_atom = caf::atom_constant<caf::atom("pm_result")>;
using pm_retry_atom = caf::atom_constant<caf::atom("pm_retry")>;
using pm_idle_atom = caf::atom_constant<caf::atom("pm_idle")>;
using pm_flush_atom = caf::atom_constant<caf::atom("pm_flush")>;
using pm_read_atom = caf::atom_constant<caf::atom("pm_read")>;
using pm_timeout_atom = caf::atom_constant<caf::atom("pm_timeout")>;
using pm_tick_atom = caf::atom_constant<caf::atom("pm_tick")>;
using pm_start_atom = caf::atom_constant<caf::atom("pm_start")>;

} // namespace

/// An event on its way to an instance, and what the instance makes of it.
struct pm_delivery {
  std::shared_ptr<const event_context> event;
  interest::kind how = interest::kind::none;
};

struct pm_outcome {
  uint64_t position = 0;
  std::string id;
  bool ended = false;   ///< stop: delete the state
  std::string state;    ///< msgpack of the state after the event
  caf::error failure;   ///< the policy said stop
};

} // namespace sourcery::detail

// Never leave the process: an instance and its router share it.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sourcery::detail::pm_delivery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sourcery::detail::pm_outcome)

namespace sourcery::detail {
namespace {

struct pm_instance_state {
  const process_type* type = nullptr;
  std::unique_ptr<process_model> process;
  std::string id;
  caf::actor router;
  dispatcher* app = nullptr;
  const persistence::event_registry* types = nullptr;
  process_options options;
  std::deque<pm_delivery> queue;  ///< events waiting, in order
  commands pending;               ///< commands of the current event still to send
  uint32_t failures = 0;          ///< consecutive, of the current event
  uint32_t command_failures = 0;  ///< consecutive, of the first pending command
  // The event being handled: its attempt (answers of older ones are late)
  // and deadline (max while a retry waits). The router's tick asks about it
  // (pm_timeout), so instances need no timers of their own.
  uint64_t attempt = 0;
  std::chrono::steady_clock::time_point event_deadline = std::chrono::steady_clock::time_point::max();
  bool busy = false;
  /// A retry resumes the commands still pending (the failed one first)
  /// instead of handling the event again: commands already accepted are
  /// not sent twice.
  bool resume_commands = false;
  /// Its saved state did not decode: every event fails with this, and the
  /// policy decides (skip the events or stop), instead of a crash loop.
  caf::error broken;
  static inline const char* name = "process_instance";
};

// -- an instance ------------------------------------------------------------------

using pm_instance_self = caf::stateful_actor<pm_instance_state>;

/// The error of an event an instance did not finish within its event timeout.
caf::error event_timed_out(pm_instance_self* self) {
  auto& st = self->state;
  const auto& rec = *st.queue.front().event;
  return make_error(dispatch_errc::timeout, std::string{"process "} + st.type->name + " instance " + st.id
                                              + " did not finish event " + std::to_string(rec.position) + " ("
                                              + rec.type + ") within its event timeout of "
                                              + std::to_string(st.options.event_timeout.count()) + " ms");
}

void pm_next_event(pm_instance_self* self);

/// The event at the queue's front is done (or skipped, or failed for
/// good): apply it, report the outcome to the router, take the next.
void pm_finish(pm_instance_self* self, bool skipped, caf::error failure) {
  auto& st = self->state;
  auto d = std::move(st.queue.front());
  st.queue.pop_front();
  st.busy = false;
  st.failures = 0;
  st.command_failures = 0;
  pm_outcome out;
  out.position = d.event->position;
  out.id = st.id;
  out.failure = std::move(failure);
  if (!out.failure && !skipped && d.how != interest::kind::stop) {
    if (auto err = st.process->apply(*st.types, *d.event))
      out.failure = err; // a broken apply is not retried: the state would be unknown
  }
  out.ended = d.how == interest::kind::stop;
  if (!out.ended)
    out.state = st.process->pack();
  self->send(st.router, pm_done_atom::value, std::move(out));
  pm_next_event(self);
}

caf::error pm_stopped_at(pm_instance_self* self, const caf::error& err) {
  auto& st = self->state;
  return caf::make_error(caf::sec::runtime_error, std::string{"process "} + st.type->name + " instance " + st.id
                                                    + " stopped at event "
                                                    + std::to_string(st.queue.front().event->position) + ": "
                                                    + describe_error(err));
}

void pm_send_next(pm_instance_self* self);

/// Whether a command failed because something was out of reach for a while
/// (the store, the node owning the aggregate), not because of the event. A
/// timeout is not: a command's deadline is its event's, and an event past
/// its timeout is the policy's to judge.
bool pm_outage(const caf::error& err) {
  auto d = code_of_dispatch(err);
  if (d == dispatch_errc::unavailable || d == dispatch_errc::moved)
    return true;
  auto s = persistence::code_of(err);
  return s == persistence::store_errc::unavailable || s == persistence::store_errc::fenced;
}

/// The event failed (`handle` threw, a command failed, the event timed
/// out): the process's `on_error`, else its policy, decides. `in_command`:
/// a command failed (it is still first in `pending`), so a retry resumes
/// the commands instead of handling the event again.
void pm_fail(pm_instance_self* self, const caf::error& err, bool in_command = false) {
  auto& st = self->state;
  const auto& rec = *st.queue.front().event;
  error_action action;
  ++st.failures;
  if (auto own = st.process->on_error(err, rec, st.failures))
    action = *own;
  else if (pm_outage(err))
    // Not the event's fault: the store or the node running the command is
    // out of reach for a while (a failover, a node rejoining its cluster).
    // Retried with the policy's backoff without end, as storage failures are.
    action = error_action::retry(st.options.on_error.backoff(st.failures));
  else
    action = st.options.on_error.decide(st.failures);
  if (st.options.on_error.observer)
    st.options.on_error.observer(handler_failure{std::string{"process "} + st.type->name + " instance " + st.id,
                                                 rec, err, st.failures, action});
  st.event_deadline = std::chrono::steady_clock::time_point::max(); // no timeout while a retry waits
  ++st.attempt;                                                        // answers still out are late now
  if (action.what == error_action::kind::retry) {
    st.resume_commands = in_command && !st.pending.empty();
    if (!st.resume_commands)
      st.pending.clear();
    self->delayed_send(self, action.delay, pm_retry_atom::value);
    return;
  }
  st.pending.clear();
  st.resume_commands = false;
  if (action.what == error_action::kind::skip)
    return pm_finish(self, true, {});
  pm_finish(self, false, pm_stopped_at(self, err));
}

/// The first pending command failed: the process's `on_failure` decides
/// about that command when it has one; else the event fails (`pm_fail`).
void pm_command_failed(pm_instance_self* self, const caf::error& err) {
  auto& st = self->state;
  if (st.process->has_on_failure()) {
    const auto& rec = *st.queue.front().event;
    const auto& cmd = st.pending.front();
    command_decision decision;
    try {
      decision = st.process->on_failure(failed_command{cmd.name, cmd.value, {}, err, ++st.command_failures}, rec);
    } catch (const std::exception& e) { // a bug of the saga: its policy decides, no crash loop
      return pm_fail(self, caf::make_error(caf::sec::runtime_error, std::string{"on_failure threw: "} + e.what()));
    }
    if (st.options.on_error.observer) {
      error_action as_action{decision.what == command_decision::kind::retry  ? error_action::kind::retry
                             : decision.what == command_decision::kind::skip ? error_action::kind::skip
                                                                             : error_action::kind::stop,
                             decision.delay};
      st.options.on_error.observer(handler_failure{std::string{"process "} + st.type->name + " instance " + st.id
                                                     + " command " + cmd.name,
                                                   rec, err, st.command_failures, as_action});
    }
    ++st.attempt; // the failed command's late answer, if any, is dropped
    switch (decision.what) {
      case command_decision::kind::retry:
        st.event_deadline = std::chrono::steady_clock::time_point::max(); // no timeout while it waits
        st.resume_commands = true;
        self->delayed_send(self, decision.delay, pm_retry_atom::value);
        return;
      case command_decision::kind::skip:
        st.pending.erase(st.pending.begin());
        st.command_failures = 0;
        // The rest get the event's whole time again.
        st.event_deadline = std::chrono::steady_clock::now() + st.options.event_timeout;
        return pm_send_next(self);
      case command_decision::kind::stop:
        st.pending.clear();
        return pm_finish(self, false, pm_stopped_at(self, err));
    }
  } else {
    pm_fail(self, err, true);
  }
}

/// Starts the event at the queue's front: its commands, from `handle`.
void pm_begin_event(pm_instance_self* self) {
  auto& st = self->state;
  const auto& rec = *st.queue.front().event;
  ++st.attempt;
  st.event_deadline = std::chrono::steady_clock::now() + st.options.event_timeout;
  if (st.broken)
    return pm_fail(self, st.broken);
  caf::error err;
  try {
    st.pending = st.process->handle(*st.types, rec, err);
  } catch (const std::exception& e) {
    err = caf::make_error(caf::sec::runtime_error, std::string{"handle threw: "} + e.what());
  }
  if (err)
    return pm_fail(self, err);
  pm_send_next(self);
}

void pm_next_event(pm_instance_self* self) {
  auto& st = self->state;
  if (st.busy || st.queue.empty())
    return; // idle: the router passivates it in time
  st.busy = true;
  pm_begin_event(self);
}

/// Dispatches the first pending command, with what is left of the event's
/// time, the event as its cause and the event's metadata.
void pm_send_next(pm_instance_self* self) {
  auto& st = self->state;
  if (st.pending.empty())
    return pm_finish(self, false, {});
  const auto& rec = *st.queue.front().event;
  dispatch_options opts;
  // What is left of the event's time (a command past it answers timeout).
  opts.timeout = std::max(std::chrono::milliseconds{1}, std::chrono::ceil<std::chrono::milliseconds>(
                                                          st.event_deadline - std::chrono::steady_clock::now()));
  opts.causation_id = rec.event_id.to_string();
  opts.correlation_id = rec.correlation_id;
  opts.metadata = rec.meta();
  caf::actor me = caf::actor_cast<caf::actor>(self);
  st.pending.front().send(*st.app, std::move(opts), [me, attempt = st.attempt](caf::expected<dispatch_result> r) {
    if (r)
      caf::anon_send(me, pm_result_atom::value, attempt, std::move(*r));
    else
      caf::anon_send(me, pm_result_atom::value, attempt, std::move(r.error()));
  });
}

/// The answer to the first pending command.
void pm_command_answered(pm_instance_self* self, uint64_t attempt, caf::expected<dispatch_result> r) {
  auto& st = self->state;
  if (st.pending.empty() || attempt != st.attempt)
    return; // a late answer: the event timed out, or a retry was scheduled
  if (!r) {
    // The failed command stays first in `pending`: a retry sends it
    // again, and only the commands after it.
    // A command cut short by what was left of the event's time: the
    // event timed out, and says so (as the router's tick would).
    if (code_of_dispatch(r.error()) == dispatch_errc::timeout && std::chrono::steady_clock::now() >= st.event_deadline)
      return pm_command_failed(self, event_timed_out(self));
    return pm_command_failed(self, r.error());
  }
  st.command_failures = 0;
  auto cmd = std::move(st.pending.front());
  st.pending.erase(st.pending.begin());
  if (!r->accepted) {
    commands more;
    try {
      more = st.process->on_rejected(failed_command{cmd.name, cmd.value, r->why, {}, 0}, *st.queue.front().event);
    } catch (const std::exception& e) { // a bug of the saga: its policy decides, no crash loop
      return pm_fail(self, caf::make_error(caf::sec::runtime_error, std::string{"on_rejected threw: "} + e.what()));
    }
    for (auto& c : more)
      st.pending.push_back(std::move(c));
  }
  pm_send_next(self);
}

/// A retry's timer: the event again, or its commands from the failed one.
void pm_retry(pm_instance_self* self) {
  auto& st = self->state;
  if (st.queue.empty())
    return;
  if (!st.resume_commands)
    return pm_begin_event(self); // the event again (`handle` failed, or the event timed out in it)
  st.resume_commands = false;    // its commands from the one that failed
  ++st.attempt;
  st.event_deadline = std::chrono::steady_clock::now() + st.options.event_timeout;
  pm_send_next(self);
}

caf::behavior pm_instance(pm_instance_self* self, const process_type* type, std::string id, std::string state,
                          caf::actor router, dispatcher* app, const persistence::event_registry* types,
                          process_options options) {
  auto& st = self->state;
  st.type = type;
  try {
    st.process = type->open(state);
  } catch (const std::exception& e) {
    st.process = type->open({}); // its events fail with `broken`: the policy decides
    st.broken = caf::make_error(caf::sec::runtime_error, std::string{"process "} + st.type->name + " instance " + id
                                                           + ": its saved state does not decode: " + e.what());
  }
  st.id = std::move(id);
  st.router = std::move(router);
  st.app = app;
  st.types = types;
  st.options = options;
  self->send(self, pm_retry_atom::value, true); // first look at the queue
  return {
    [self](pm_event_atom, pm_delivery& d) {
      self->state.queue.push_back(std::move(d));
      pm_next_event(self);
    },
    [self](pm_result_atom, uint64_t attempt, dispatch_result& r) { pm_command_answered(self, attempt, std::move(r)); },
    [self](pm_result_atom, uint64_t attempt, caf::error& err) { pm_command_answered(self, attempt, std::move(err)); },
    [self](pm_timeout_atom) { // the router saw no progress for a while
      auto& st = self->state;
      if (!st.busy || std::chrono::steady_clock::now() < st.event_deadline)
        return; // done, waiting for a retry, or still within its time
      if (st.pending.empty())
        pm_fail(self, event_timed_out(self));
      else
        pm_command_failed(self, event_timed_out(self));
    },
    [self](pm_retry_atom) { pm_retry(self); },
    [self](pm_retry_atom, bool) { pm_next_event(self); },
    [self](pm_idle_atom) { // the router agrees: passivate
      auto& st = self->state;
      if (!st.busy && st.queue.empty())
        self->quit();
    },
  };
}

// -- the router -------------------------------------------------------------------

struct pm_router_state {
  const process_type* type = nullptr;
  persistence::event_store* store = nullptr;
  persistence::projection_store* models = nullptr;
  const persistence::event_registry* types = nullptr;
  const stream_prefixes* prefixes = nullptr;
  dispatcher* app = nullptr;
  std::shared_ptr<handler_status> status;
  process_options options;
  std::string saved_as; ///< the projection-store name of its states and position
  uint64_t read_upto = 0;
  uint64_t committed = 0;
  std::map<uint64_t, size_t> in_flight;                                   // position -> instances left
  std::map<std::string, std::deque<std::pair<uint64_t, std::optional<std::string>>>> outcomes; // unsaved
  /// An open instance, and what the router's tick needs to know of it.
  struct instance_entry {
    caf::actor actor;
    size_t in_flight = 0; ///< events delivered, outcome not back yet
    bool ended = false;   ///< its process stopped: passivate once nothing is in flight
    std::chrono::steady_clock::time_point last_activity = std::chrono::steady_clock::now();
  };
  std::map<std::string, instance_entry> instances;
  std::map<caf::actor_addr, std::string> id_of;
  std::set<std::string> draining;
  std::map<std::string, std::vector<pm_delivery>> waiting; // for draining instances
  bool started = false; ///< its position is read (a storage failure delays that)
  bool reading = false;
  bool flush_scheduled = false;
  storage_retry storage;         ///< failures to read `$all` or save
  uint32_t decode_failures = 0;  ///< consecutive, of the event after `read_upto`
  std::chrono::milliseconds tick{1000};
  static inline const char* name = "process_router";

  // Instances are monitored, not linked: a link would cost the router a search
  // of all its links at the end of every instance. They end with it here.
  ~pm_router_state() {
    for (auto& [id, e] : instances)
      caf::anon_send_exit(e.actor, caf::exit_reason::kill);
  }
};

using pm_router_self = caf::stateful_actor<pm_router_state>;

/// The state an instance opens with: its latest unsaved one, else the saved one.
std::optional<std::string> pm_state_of(pm_router_self* self, const std::string& id) {
  auto& st = self->state;
  if (auto o = st.outcomes.find(id); o != st.outcomes.end() && !o->second.empty())
    return o->second.back().second;
  auto saved = st.models->get(st.saved_as, "instances", id);
  if (!saved)
    throw std::runtime_error(st.saved_as + " cannot read instance " + id + ": " + caf::to_string(saved.error()));
  return *saved;
}

void pm_open(pm_router_self* self, const std::string& id, std::string state) {
  auto& st = self->state;
  auto a = self->spawn(pm_instance, st.type, id, std::move(state), caf::actor_cast<caf::actor>(self), st.app, st.types,
                       st.options);
  self->monitor(a);
  st.id_of[a.address()] = id;
  auto& e = st.instances[id];
  e = {};
  e.actor = a;
}

void pm_deliver(pm_router_self* self, const std::string& id, pm_delivery d) {
  auto& st = self->state;
  st.in_flight[d.event->position] += 1;
  if (st.draining.count(id) != 0) {
    st.waiting[id].push_back(std::move(d));
    return;
  }
  auto& e = st.instances.at(id);
  if (e.in_flight++ == 0)
    e.last_activity = std::chrono::steady_clock::now(); // its time runs from here
  self->send(e.actor, pm_event_atom::value, std::move(d));
}

/// Its storage failed (a full disk, an I/O error): retry `again` later,
/// with backoff, until the cause goes -- a restart would fail the same way.
template <class Again>
void pm_storage_failed(pm_router_self* self, const caf::error& err, Again again) {
  auto& st = self->state;
  self->delayed_send(self, st.storage.failed(err, st.saved_as, *st.status, st.options.on_error), again);
}

/// An event it cannot even decode: the process's `on_error`, else its
/// policy, decides, as for a failed command. Returns false to stop reading.
bool pm_undecodable(pm_router_self* self, const persistence::recorded_event& rec, const caf::error& err) {
  auto& st = self->state;
  ++st.decode_failures;
  auto own = st.type->on_undecodable(err, rec, st.decode_failures);
  error_action action = own ? *own : st.options.on_error.decide(st.decode_failures);
  if (st.options.on_error.observer)
    st.options.on_error.observer(handler_failure{st.saved_as, rec, err, st.decode_failures, action});
  if (action.what == error_action::kind::retry) {
    st.reading = true; // from this event again, later
    self->delayed_send(self, action.delay, pm_read_atom::value);
    return false;
  }
  st.decode_failures = 0;
  if (action.what == error_action::kind::stop) {
    st.status->stop(caf::make_error(caf::sec::runtime_error, st.saved_as + " stopped at event "
                                                               + std::to_string(rec.position) + ": "
                                                               + describe_error(err)),
                    rec.position);
    self->quit(caf::exit_reason::user_shutdown);
    return false;
  }
  st.read_upto = rec.position; // skipped
  return true;
}

/// Reads the next events of `$all` and delivers each to the instances it
/// concerns, opening them as needed.
void pm_read(pm_router_self* self) {
  auto& st = self->state;
  st.reading = false;
  if (st.in_flight.size() >= st.options.max_in_flight)
    return; // resumed when outcomes come back
  auto batch = st.store->read_all(st.read_upto + 1, 256);
  if (!batch) {
    st.reading = true; // the retry is this read
    return pm_storage_failed(self, batch.error(), pm_read_atom::value);
  }
  bool stopped_reading = false;
  for (auto& rec : *batch) {
    caf::error err;
    auto want = st.type->interested(*st.types, rec, err);
    if (err) {
      if (pm_undecodable(self, rec, err))
        continue;
      stopped_reading = true;
      break;
    }
    st.decode_failures = 0;
    st.read_upto = rec.position;
    if (want.what == interest::kind::none)
      continue;
    rec.prefix_length = st.prefixes != nullptr ? st.prefixes->prefix_length(rec.stream_id) : 0;
    auto shared = std::make_shared<const event_context>(std::move(rec));
    for (auto& id : want.ids) {
      if (st.instances.count(id) == 0 && st.draining.count(id) == 0) {
        auto state = pm_state_of(self, id);
        if (!state && want.what != interest::kind::start)
          continue; // no such instance: nothing to continue or stop
        pm_open(self, id, state.value_or(std::string{}));
      }
      pm_deliver(self, id, pm_delivery{shared, want.what});
    }
  }
  if (batch->size() == 256 && !stopped_reading) {
    st.reading = true;
    self->send(self, pm_read_atom::value);
  }
  if (!st.flush_scheduled) {
    st.flush_scheduled = true;
    self->send(self, pm_flush_atom::value);
  }
}

/// Saves the states of every event before the first one still in flight,
/// with that position, in one transaction.
void pm_flush(pm_router_self* self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  uint64_t upto = st.in_flight.empty() ? st.read_upto : st.in_flight.begin()->first - 1;
  if (upto <= st.committed)
    return;
  // The latest state of each instance up to `upto`, left in `outcomes`
  // until the write commits (a failed write is tried again).
  std::vector<std::pair<const std::string*, const std::optional<std::string>*>> writes;
  for (auto& [id, q] : st.outcomes) {
    const std::optional<std::string>* latest = nullptr;
    for (auto& [pos, state] : q) {
      if (pos > upto)
        break;
      latest = &state;
    }
    if (latest != nullptr)
      writes.emplace_back(&id, latest);
  }
  auto err = st.models->write(st.saved_as, upto, [&](persistence::projection_store::writer& w) {
    for (auto& [id, state] : writes) {
      if (*state)
        w.put("instances", *id, **state);
      else
        w.erase("instances", *id);
    }
    return caf::error{};
  });
  if (err) {
    st.flush_scheduled = true; // the retry is this flush
    return pm_storage_failed(self, err, pm_flush_atom::value);
  }
  st.storage.ok(*st.status);
  for (auto o = st.outcomes.begin(); o != st.outcomes.end();) {
    auto& q = o->second;
    while (!q.empty() && q.front().first <= upto)
      q.pop_front();
    o = q.empty() ? st.outcomes.erase(o) : std::next(o);
  }
  st.committed = upto;
  st.status->advance(upto);
}

/// An instance ended: crashed (so does the router, to restart from its
/// saved states), or passivated (reopened for events that came meanwhile).
void pm_instance_down(pm_router_self* self, const caf::down_msg& msg) {
  auto& st = self->state;
  auto i = st.id_of.find(msg.source);
  if (i == st.id_of.end())
    return;
  if (msg.reason) {
    self->quit(msg.reason);
    return;
  }
  auto id = i->second;
  st.id_of.erase(i);
  if (auto a = st.instances.find(id); a != st.instances.end() && a->second.actor.address() == msg.source)
    st.instances.erase(a);
  st.draining.erase(id);
  if (auto w = st.waiting.find(id); w != st.waiting.end()) {
    auto deliveries = std::move(w->second);
    st.waiting.erase(w);
    pm_open(self, id, pm_state_of(self, id).value_or(std::string{}));
    auto& e = st.instances.at(id);
    e.in_flight = deliveries.size();
    for (auto& d : deliveries)
      self->send(e.actor, pm_event_atom::value, std::move(d));
  }
}

/// An instance is done with an event: keep its state for the next flush,
/// passivate it if its process ended, read on if it waited for room.
void pm_outcome_back(pm_router_self* self, pm_outcome& out) {
  auto& st = self->state;
  if (out.failure) {
    st.status->stop(out.failure, out.position);
    self->quit(caf::exit_reason::user_shutdown); // the instances go with it (its state's destructor)
    return;
  }
  st.outcomes[out.id].emplace_back(out.position,
                                   out.ended ? std::nullopt : std::optional<std::string>{std::move(out.state)});
  if (auto f = st.in_flight.find(out.position); f != st.in_flight.end() && --f->second == 0)
    st.in_flight.erase(f);
  if (auto a = st.instances.find(out.id); a != st.instances.end()) {
    auto& e = a->second;
    if (e.in_flight > 0)
      --e.in_flight;
    e.last_activity = std::chrono::steady_clock::now();
    e.ended = e.ended || out.ended;
    if (e.ended && e.in_flight == 0 && st.draining.count(out.id) == 0) {
      // Nothing in flight: its queue is empty, so it ends at once.
      st.draining.insert(out.id);
      self->send(e.actor, pm_idle_atom::value);
    }
  }
  if (!st.flush_scheduled) {
    st.flush_scheduled = true;
    self->send(self, pm_flush_atom::value);
  }
  if (!st.reading && st.in_flight.size() < st.options.max_in_flight && st.store->head_position() > st.read_upto) {
    st.reading = true;
    self->send(self, pm_read_atom::value);
  }
}

/// One timer for all instances (a timer per instance and event would cost
/// a push into CAF's clock, and a wake-up of its thread, each): busy
/// without progress past the event timeout, ask; idle past the idle
/// timeout, passivate.
void pm_tick(pm_router_self* self) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  for (auto& [id, e] : st.instances) {
    if (st.draining.count(id) != 0)
      continue;
    if (e.in_flight > 0) {
      if (now - e.last_activity >= st.options.event_timeout)
        self->send(e.actor, pm_timeout_atom::value);
    } else if (st.options.idle_timeout.count() > 0 && now - e.last_activity >= st.options.idle_timeout) {
      st.draining.insert(id);
      self->send(e.actor, pm_idle_atom::value); // nothing in flight: it ends at once
    }
  }
  self->delayed_send(self, st.tick, pm_tick_atom::value);
}

/// Loads (or first saves) its position; the first read and tick.
void pm_router_start(pm_router_self* self) {
  auto& st = self->state;
  st.saved_as = std::string{"process:"} + st.type->name;
  st.status->resume();
  // Its storage away (a database failing over): not a crash to restart --
  // a restart would fail the same way until the supervisor gives up -- but
  // a wait, with the policy's backoff, as for any storage failure.
  auto cp = st.models->checkpoint(st.saved_as);
  if (!cp)
    return pm_storage_failed(self, cp.error(), pm_start_atom::value);
  if (*cp) {
    st.committed = **cp;
  } else {
    st.committed = initial_position(st.options, *st.store);
    if (auto err = st.models->write(st.saved_as, st.committed, [](auto&) { return caf::error{}; }))
      return pm_storage_failed(self, err, pm_start_atom::value);
  }
  st.storage.ok(*st.status);
  st.started = true;
  st.read_upto = st.committed;
  st.status->advance(st.committed);
  st.reading = true;
  self->send(self, pm_read_atom::value);
  // The tick: often enough that a timeout is noticed within a quarter of it late.
  auto shortest = st.options.idle_timeout.count() > 0 ? std::min(st.options.event_timeout, st.options.idle_timeout)
                                                        : st.options.event_timeout;
  st.tick = std::clamp(shortest / 4, std::chrono::milliseconds{1}, std::chrono::milliseconds{1000});
  self->delayed_send(self, st.tick, pm_tick_atom::value);
}

caf::behavior pm_router(pm_router_self* self, const process_type* type, persistence::event_store* store,
                        persistence::projection_store* models, const persistence::event_registry* types,
                        const stream_prefixes* prefixes, dispatcher* app, std::shared_ptr<handler_status> status,
                        process_options options) {
  auto& st = self->state;
  st.type = type;
  st.store = store;
  st.models = models;
  st.types = types;
  st.prefixes = prefixes;
  st.app = app;
  st.status = std::move(status);
  st.options = options;
  pm_router_start(self);
  self->set_down_handler([self](caf::down_msg& msg) { pm_instance_down(self, msg); });
  return {
    [self](pm_start_atom) { pm_router_start(self); },
    [self](pm_read_atom) { pm_read(self); },
    [self](pm_flush_atom) { pm_flush(self); },
    [self](head_atom, uint64_t head) {
      auto& st = self->state;
      if (st.started && head > st.read_upto && !st.reading) {
        st.reading = true;
        self->send(self, pm_read_atom::value);
      }
    },
    [self](pm_done_atom, pm_outcome& out) { pm_outcome_back(self, out); },
    [self](pm_tick_atom) { pm_tick(self); },
  };
}


} // namespace

supervision::child_spec process_child_spec(const process_type* type, persistence::event_store* store,
                                           persistence::projection_store* models,
                                           const persistence::event_registry* types, const stream_prefixes* prefixes,
                                           dispatcher* app, std::shared_ptr<handler_status> status,
                                           process_options options, std::function<void(const caf::actor&)> started) {
  supervision::child_spec spec;
  spec.id = std::string{"process:"} + type->name;
  spec.restart = supervision::restart_type::transient;
  spec.start = [=](caf::actor_system& sys, const caf::message&) -> caf::expected<caf::actor> {
    // Detached: the router blocks on durable commits of the instances'
    // states, which must not hold up one of the scheduler's threads.
    caf::actor a = sys.spawn<caf::detached>(pm_router, type, store, models, types, prefixes, app, status, options);
    if (started)
      started(a);
    return a;
  };
  return spec;
}

} // namespace sourcery::detail
