#pragma once

// The actor of one aggregate instance: its commands one at a time, in
// arrival order, each decided against the state, appended through the
// store's group commit, then applied. Included by aggregate_host.hpp.

#include <chrono>
#include <deque>
#include <optional>
#include <string>

#include <caf/all.hpp>

#include "sourcery/actors/aggregates/detail/aggregate_host.hpp"
#include "sourcery/actors/aggregates/detail/command_delivery.hpp"
#include "sourcery/supervision/supervisor.hpp"

namespace sourcery::detail {

template <aggregate A>
struct aggregate_actor_state {
  const aggregate_host_of<A>* host = nullptr;
  std::string stream;
  caf::actor owner; // the registry, asked before passivating
  std::optional<loaded<A>> current;
  // The store's count of forgotten subjects when `current` was loaded: once
  // it moves, `current` may hold personal data that is gone, and is loaded
  // again (so that no later snapshot seals it anew).
  uint64_t forgets_seen = 0;
  bool busy = false;
  bool stopping = false;
  std::optional<lifespan> next_lifespan; // chosen by the last command
  // Passivation: idle until `idle_deadline` (max: not idle, or no lifespan).
  // One timer at a time, not one per command (that would fill CAF's clock):
  // a timer that fires before the deadline is armed again for the rest.
  std::chrono::steady_clock::time_point idle_deadline = std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point timer_due = std::chrono::steady_clock::time_point::max(); // max: none

  int attempts = 0;
  command_delivery inflight;
  std::optional<typename aggregate_repository<A>::decision> inflight_decision;
  std::optional<lifespan> inflight_after_command;
  std::deque<command_delivery> queue;
  static inline const char* name = "aggregate";

  const aggregate_repository<A>& repo() const { return host->repo(); }
};

template <aggregate A>
using aggregate_self = caf::stateful_actor<aggregate_actor_state<A>>;

template <aggregate A>
void process_next(aggregate_self<A>* self);

/// Domain code threw (a bug): answer the caller and everyone queued with the
/// error, then end this actor. The next command reopens the aggregate from
/// the store (let it crash).
template <aggregate A>
void crash(aggregate_self<A>* self, command_delivery& cmd, const std::string& what) {
  auto err = caf::make_error(caf::sec::runtime_error, "aggregate '" + self->state.stream + "' crashed: " + what);
  // Tell the registry first: a caller that retries after our answer must find
  // the route already gone.
  self->send(self->state.owner, gone_atom::value, self->state.stream);
  cmd.answer(err);
  for (auto& queued : self->state.queue)
    queued.answer(err);
  self->state.queue.clear();
  self->quit(err);
}

/// A rejected or failed command: its answer, and the lifespan after an error.
template <aggregate A>
void answer_error(aggregate_self<A>* self, command_delivery& cmd, caf::expected<dispatch_result> r) {
  if (auto& after = self->state.host->settings().after_error)
    self->state.next_lifespan = *after;
  cmd.answer(std::move(r));
}

/// The answer to an accepted command, with what the envelope asked for.
template <aggregate A>
caf::expected<dispatch_result> accepted(aggregate_self<A>* self, const command_envelope& env,
                                        const persistence::append_result& appended) {
  auto& st = self->state;
  dispatch_result r;
  r.accepted = true;
  r.version = appended.stream_version;
  r.first_position = appended.first_position;
  r.last_position = appended.last_position;
  if (env.returns == returning::state) {
    if constexpr (requires(const A& a, msgpack::packer<msgpack::sbuffer>& pk) { a.msgpack_pack(pk); }) {
      msgpack::sbuffer buf;
      msgpack::pack(buf, st.current->state);
      r.state.assign(buf.data(), buf.data() + buf.size());
    }
  }
  if (env.returns == returning::events && appended.first_position != 0) {
    auto events = st.repo().store().read_all(appended.first_position,
                                              appended.last_position - appended.first_position + 1);
    if (!events)
      return events.error();
    r.events = std::move(*events);
  }
  return r;
}

/// Runs `cmd`; `attempt` counts its conflict retries so far (0: first try).
template <aggregate A>
void process(aggregate_self<A>* self, command_delivery cmd, int attempt = 0) {
  auto& st = self->state;
  // Set here, per command: a retry that ends at once (rejected) moves on to
  // the next command, which must start from zero, not inherit this count.
  st.attempts = attempt;
  const auto& env = cmd.envelope;
  if (env.deadline != std::chrono::steady_clock::time_point::max() && std::chrono::steady_clock::now() > env.deadline) {
    answer_error(self, cmd, caf::make_error(caf::sec::request_timeout, "the command's deadline passed before it began"));
    return process_next(self);
  }
  auto* execute = st.host->find(env.command_type);
  if (execute == nullptr) {
    answer_error(self, cmd, make_error(dispatch_errc::unregistered_command,
                                       "aggregate " + st.host->name() + " has no route for " + env.command_type));
    return process_next(self);
  }
  try {
    if (st.current && st.forgets_seen != st.repo().store().forgets())
      st.current.reset();
    if (!st.current) {
      st.forgets_seen = st.repo().store().forgets();
      auto l = st.repo().load(st.stream);
      if (!l) {
        answer_error(self, cmd, l.error());
        return process_next(self);
      }
      st.current = std::move(*l);
    }
  } catch (const std::exception& e) {
    return crash(self, cmd, std::string{"apply threw while rebuilding: "} + e.what());
  }
  std::optional<caf::expected<typename aggregate_host_of<A>::decided>> decided;
  try {
    decided.emplace((*execute)(st.current->state, env));
  } catch (const std::exception& e) {
    return crash(self, cmd, std::string{"execute threw: "} + e.what());
  }
  if (!*decided) {
    answer_error(self, cmd, decided->error());
    return process_next(self);
  }
  auto after_command = (*decided)->after_command;
  if ((*decided)->result.rejected()) {
    st.next_lifespan = after_command;
    dispatch_result r;
    r.why = (*decided)->result.why();
    r.version = st.current->version;
    answer_error(self, cmd, std::move(r));
    return process_next(self);
  }
  auto d = st.repo().encode(std::move((*decided)->result),
                            command_meta{env.causation_id, env.correlation_id, env.metadata});
  if (!d) {
    answer_error(self, cmd, d.error());
    return process_next(self);
  }
  st.busy = true;
  // The payloads move to the store: a retry decides (and encodes) again.
  auto data = std::move(d->data);
  st.inflight = std::move(cmd);
  st.inflight_decision = std::move(*d);
  st.inflight_after_command = after_command;
  // Appends go through the store's group commit; the answer comes back as a
  // message, so no scheduler thread waits for a disk flush.
  // A weak reference: the store's writer may answer after this actor, or
  // its whole actor system, is gone (a shared store outlives an application
  // that stopped); then there is nobody to tell.
  caf::weak_actor_ptr weak_me{self->ctrl()};
  st.repo().store().append_async(st.stream, persistence::expected_version::exact(st.current->version), std::move(data),
                                 [weak_me](caf::expected<persistence::append_result> r) {
                                   auto strong = weak_me.lock();
                                   if (!strong)
                                     return;
                                   auto me = caf::actor_cast<caf::actor>(std::move(strong));
                                   if (r)
                                     caf::anon_send(me, appended_atom::value, r->stream_version, r->first_position,
                                                    r->last_position);
                                   else
                                     caf::anon_send(me, appended_atom::value, std::move(r.error()));
                                 });
}

/// Idle again: start the lifespan the last command chose (or the default).
template <aggregate A>
void arm_idle_timer(aggregate_self<A>* self) {
  auto& st = self->state;
  auto chosen = st.next_lifespan.value_or(st.host->settings().lifespan);
  st.next_lifespan.reset();
  st.idle_deadline = std::chrono::steady_clock::time_point::max();
  switch (chosen.how) {
    case lifespan::kind::infinite:
      return;
    case lifespan::kind::stop:
      self->send(st.owner, passivate_atom::value, st.stream);
      return;
    case lifespan::kind::timeout:
      if (chosen.time.count() <= 0)
        return; // a zero timeout means none (the old `lifespan = 0`)
      st.idle_deadline = self->clock().now() + chosen.time; // the actor clock: a test may drive it
      if (st.timer_due > st.idle_deadline) { // none armed, or one due too late
        st.timer_due = st.idle_deadline;
        self->delayed_send(self, chosen.time, idle_atom::value, uint64_t{0});
      }
      return;
  }
}

template <aggregate A>
void process_next(aggregate_self<A>* self) {
  auto& st = self->state;
  st.busy = false;
  st.attempts = 0;
  if (!st.queue.empty()) {
    auto cmd = std::move(st.queue.front());
    st.queue.pop_front();
    return process(self, std::move(cmd));
  }
  if (st.stopping)
    return self->quit();
  arm_idle_timer(self);
}

template <aggregate A>
void on_appended(aggregate_self<A>* self, const persistence::append_result& appended) {
  auto& st = self->state;
  try {
    auto r = st.repo().confirm(st.stream, *st.current, *st.inflight_decision, appended);
    st.next_lifespan = r.events.empty() ? std::nullopt : lifespan_after_event(st.current->state, r.events.back());
    if (!st.next_lifespan)
      st.next_lifespan = st.inflight_after_command;
    st.inflight.answer(accepted(self, st.inflight.envelope, appended));
  } catch (const std::exception& e) {
    return crash(self, st.inflight, std::string{"apply threw after its events were stored: "} + e.what());
  }
  process_next(self);
}

template <aggregate A>
void on_append_failed(aggregate_self<A>* self, caf::error& err) {
  auto& st = self->state;
  if (persistence::code_of(err) == persistence::store_errc::wrong_expected_version
      && st.attempts < st.repo().options().max_retries) {
    // Another writer got there first: catch up, decide again.
    ++st.attempts;
    if (auto e = st.repo().catch_up(*st.current, st.stream)) {
      answer_error(self, st.inflight, e);
      return process_next(self);
    }
    process(self, std::move(st.inflight), st.attempts);
    return;
  }
  if (persistence::code_of(err) == persistence::store_errc::wrong_expected_version)
    // Out of retries: still a conflict (HTTP 409), saying how hard it tried.
    err = persistence::make_error(persistence::store_errc::wrong_expected_version,
                                  "aggregate '" + st.stream + "' still conflicted after " + std::to_string(st.attempts)
                                    + " retries (other writers keep appending): " + persistence::describe(err));
  answer_error(self, st.inflight, std::move(err));
  process_next(self);
}

template <aggregate A>
void on_idle(aggregate_self<A>* self) {
  // Idle past the deadline: ask the registry to stop routing here; it
  // answers with stop. Idle, but not yet that long: wait for the rest.
  auto& st = self->state;
  auto now = self->clock().now();
  st.timer_due = std::chrono::steady_clock::time_point::max();
  if (st.busy || !st.queue.empty() || st.stopping || st.idle_deadline == std::chrono::steady_clock::time_point::max())
    return; // armed again when idle
  if (now >= st.idle_deadline) {
    st.idle_deadline = std::chrono::steady_clock::time_point::max(); // asked once
    self->send(st.owner, passivate_atom::value, st.stream);
    return;
  }
  st.timer_due = st.idle_deadline;
  self->delayed_send(self, std::chrono::ceil<std::chrono::milliseconds>(st.idle_deadline - now), idle_atom::value,
                     uint64_t{0});
}

/// The actor of one aggregate instance.
template <aggregate A>
caf::behavior aggregate_actor(aggregate_self<A>* self, const aggregate_host_of<A>* host, std::string stream,
                              caf::actor owner) {
  self->state.host = host;
  self->state.stream = std::move(stream);
  self->state.owner = std::move(owner);
  return {
    [self](dispatch_atom, command_delivery& cmd) {
      self->state.idle_deadline = std::chrono::steady_clock::time_point::max(); // busy again
      if (self->state.busy)
        self->state.queue.push_back(std::move(cmd));
      else
        process(self, std::move(cmd));
    },
    [self](appended_atom, uint64_t version, uint64_t first, uint64_t last) {
      on_appended(self, persistence::append_result{version, first, last});
    },
    [self](appended_atom, caf::error& err) { on_append_failed(self, err); },
    [self](stop_atom) {
      self->state.stopping = true;
      if (!self->state.busy)
        self->quit();
    },
    [self](idle_atom, uint64_t) { on_idle(self); },
  };
}

} // namespace sourcery::detail

namespace sourcery::detail {

/// Temporary children (a crashed aggregate is reopened by its next command,
/// not restarted), given 5 s on shutdown to finish the command in hand (its
/// append's answer) before they are killed.
template <aggregate A>
supervision::child_spec aggregate_host_of<A>::actor_template() const {
  supervision::child_spec spec;
  spec.id = "aggregate";
  spec.restart = supervision::restart_type::temporary;
  spec.shutdown = supervision::shutdown_policy::timeout(std::chrono::seconds{5});
  spec.start = [this](caf::actor_system& sys, const caf::message& args) -> caf::expected<caf::actor> {
    if (args.size() != 2 || !args.match_element<std::string>(0) || !args.match_element<caf::actor>(1))
      return supervision::make_error(supervision::supervision_errc::start_failed, "aggregate needs (stream, registry)");
    return caf::actor{sys.spawn(aggregate_actor<A>, this, args.get_as<std::string>(0), args.get_as<caf::actor>(1))};
  };
  return spec;
}

} // namespace sourcery::detail
