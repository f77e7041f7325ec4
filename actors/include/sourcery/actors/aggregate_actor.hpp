#pragma once

// Aggregates as actors: one actor per aggregate instance processes its
// commands one at a time, in arrival order; a registry per aggregate type
// opens these actors on demand under a simple_one_for_one supervisor and
// passivates idle ones.

#include <chrono>
#include <deque>
#include <optional>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>

#include <caf/all.hpp>

#include "sourcery/actors/aggregate_repository.hpp"
#include "sourcery/supervision/supervisor.hpp"

namespace sourcery {

/// The answer to a dispatched command.
struct dispatch_reply {
  bool accepted = false;
  rejection why;               ///< when rejected
  uint64_t version = 0;        ///< the aggregate's version afterwards
  uint64_t first_position = 0; ///< of the appended events in `$all` (0: none)
  uint64_t last_position = 0;
};

/// A command on its way to the actor of aggregate `stream`.
/// Where the answer to a command goes when its sender is not an actor. It
/// answers exactly once: with the outcome, or, when the command is dropped
/// unread (its registry or aggregate died with the command in its mailbox),
/// from its destructor with `request_receiver_down`, so the caller learns at
/// once that the command was not executed instead of waiting for a timeout.
class reply_slot {
public:
  using callback = std::function<void(caf::expected<dispatch_reply>)>;

  explicit reply_slot(callback f) : f_(std::move(f)) {}
  reply_slot(const reply_slot&) = delete;
  reply_slot& operator=(const reply_slot&) = delete;

  ~reply_slot() {
    if (f_)
      f_(caf::make_error(caf::sec::request_receiver_down,
                         "the command was dropped unexecuted: its aggregate or registry stopped first"));
  }

  void operator()(caf::expected<dispatch_reply> result) {
    if (auto f = std::exchange(f_, nullptr))
      f(std::move(result));
  }

private:
  callback f_;
};

template <aggregate A>
struct command_for {
  std::string stream;
  std::function<outcome<typename A::event>(const A&)> decide;
  command_meta meta;
  /// If set, the answer goes here (called on an actor's thread) instead of
  /// back to the requester: lets threads that are not actors dispatch
  /// without a scoped_actor. Copies of the command share it.
  std::shared_ptr<reply_slot> reply_to;
  /// If set, receives a copy of the state after an accepted command.
  std::function<void(const A&)> on_state;
  /// If set, the aggregate's `after_command` for this command.
  std::function<lifespan(const A&)> after_command;
  /// Past this, the caller has been answered `timeout`: a command not begun
  /// by then is skipped, so a timed-out command does not run much later.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

/// Answers a command through its `reply_to` if it has one, else through `rp`.
template <aggregate A>
void answer(command_for<A>& cmd, caf::response_promise& rp, caf::expected<dispatch_reply> result) {
  if (cmd.reply_to) {
    auto slot = std::exchange(cmd.reply_to, nullptr);
    (*slot)(std::move(result));
  } else if (result) {
    rp.deliver(std::move(*result));
  } else {
    rp.deliver(std::move(result.error()));
  }
}

using dispatch_atom = caf::atom_constant<caf::atom("dispatch")>;

namespace detail {

using appended_atom = caf::atom_constant<caf::atom("ag_append")>;
using idle_atom = caf::atom_constant<caf::atom("ag_idle")>;
using passivate_atom = caf::atom_constant<caf::atom("ag_passiv")>;
using stop_atom = caf::atom_constant<caf::atom("ag_stop")>;
using gone_atom = caf::atom_constant<caf::atom("ag_gone")>;

template <aggregate A>
struct aggregate_actor_state {
  const aggregate_repository<A>* repo = nullptr;
  std::string stream;
  caf::actor owner; // the registry, asked before passivating
  std::optional<loaded<A>> current;
  bool busy = false;
  bool stopping = false;
  std::chrono::milliseconds default_lifespan{0}; // 0: infinite
  std::optional<lifespan> next_lifespan;         // chosen by the last command
  // Passivation: idle until `idle_deadline` (max: not idle, or no lifespan).
  // One timer at a time, not one per command (that would fill CAF's clock):
  // a timer that fires before the deadline is armed again for the rest.
  std::chrono::steady_clock::time_point idle_deadline = std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point timer_due = std::chrono::steady_clock::time_point::max(); // max: none

  int attempts = 0;
  command_for<A> inflight;
  caf::response_promise inflight_rp;
  std::optional<typename aggregate_repository<A>::decision> inflight_decision;
  std::deque<std::pair<command_for<A>, caf::response_promise>> queue;
  static inline const char* name = "aggregate";
};

template <aggregate A>
using aggregate_self = caf::stateful_actor<aggregate_actor_state<A>>;

template <aggregate A>
void process_next(aggregate_self<A>* self);

/// Domain code threw (a bug): answer the caller and everyone queued with the
/// error, then end this actor. The next command reopens the aggregate from
/// the store (let it crash).
template <aggregate A>
void crash(aggregate_self<A>* self, command_for<A>& cmd, caf::response_promise& rp, const std::string& what);

template <aggregate A>
void crash(aggregate_self<A>* self, command_for<A>& cmd, caf::response_promise& rp, const std::string& what) {
  auto err = caf::make_error(caf::sec::runtime_error, "aggregate '" + self->state.stream + "' crashed: " + what);
  // Tell the registry first: a caller that retries after our answer must find
  // the route already gone.
  self->send(self->state.owner, gone_atom::value, self->state.stream);
  answer(cmd, rp, err);
  for (auto& [cmd, queued] : self->state.queue)
    answer(cmd, queued, err);
  self->state.queue.clear();
  self->quit(err);
}

/// Runs `cmd`; `attempt` counts its conflict retries so far (0: first try).
template <aggregate A>
void process(aggregate_self<A>* self, command_for<A> cmd, caf::response_promise rp, int attempt = 0) {
  auto& st = self->state;
  // Set here, per command: a retry that ends at once (rejected) moves on to
  // the next command, which must start from zero, not inherit this count.
  st.attempts = attempt;
  if (cmd.deadline != std::chrono::steady_clock::time_point::max() && std::chrono::steady_clock::now() > cmd.deadline) {
    answer(cmd, rp, caf::make_error(caf::sec::request_timeout, "the command's deadline passed before it began"));
    return process_next(self);
  }
  try {
    if (!st.current) {
      auto l = st.repo->load(st.stream);
      if (!l) {
        answer(cmd, rp, l.error());
        return process_next(self);
      }
      st.current = std::move(*l);
    }
  } catch (const std::exception& e) {
    return crash(self, cmd, rp, std::string{"apply threw while rebuilding: "} + e.what());
  }
  std::optional<caf::expected<typename aggregate_repository<A>::decision>> decided;
  try {
    decided.emplace(st.repo->decide(*st.current, 0, [&](const A& a, int) { return cmd.decide(a); }, cmd.meta));
  } catch (const std::exception& e) {
    return crash(self, cmd, rp, std::string{"execute threw: "} + e.what());
  }
  auto& d = *decided;
  if (!d) {
    answer(cmd, rp, d.error());
    return process_next(self);
  }
  if (d->decided.rejected()) {
    st.next_lifespan = cmd.after_command ? std::optional<lifespan>{cmd.after_command(st.current->state)} : std::nullopt;
    answer(cmd, rp, dispatch_reply{false, d->decided.why(), st.current->version, 0, 0});
    return process_next(self);
  }
  st.busy = true;
  // The payloads move to the store: a retry decides (and encodes) again.
  auto data = std::move(d->data);
  st.inflight = std::move(cmd);
  st.inflight_rp = std::move(rp);
  st.inflight_decision = std::move(*d);
  // Appends go through the store's group commit; the answer comes back as a
  // message, so no scheduler thread waits for a disk flush.
  // A weak reference: the store's writer may answer after this actor, or
  // its whole actor system, is gone (a shared store outlives an application
  // that stopped); then there is nobody to tell.
  caf::weak_actor_ptr weak_me{self->ctrl()};
  st.repo->store().append_async(st.stream, persistence::expected_version::exact(st.current->version), std::move(data),
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
  auto chosen = st.next_lifespan.value_or(st.default_lifespan.count() > 0 ? lifespan::timeout(st.default_lifespan)
                                                                          : lifespan::infinite());
  st.next_lifespan.reset();
  st.idle_deadline = std::chrono::steady_clock::time_point::max();
  switch (chosen.how) {
    case lifespan::kind::infinite:
      return;
    case lifespan::kind::stop:
      self->send(st.owner, passivate_atom::value, st.stream);
      return;
    case lifespan::kind::timeout:
      st.idle_deadline = std::chrono::steady_clock::now() + chosen.time;
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
    auto [cmd, rp] = std::move(st.queue.front());
    st.queue.pop_front();
    return process(self, std::move(cmd), std::move(rp));
  }
  if (st.stopping)
    return self->quit();
  arm_idle_timer(self);
}

/// The actor of one aggregate instance.
template <aggregate A>
caf::behavior aggregate_actor(aggregate_self<A>* self, const aggregate_repository<A>* repo, std::string stream,
                              caf::actor owner, std::chrono::milliseconds lifespan) {
  self->state.repo = repo;
  self->state.stream = std::move(stream);
  self->state.owner = std::move(owner);
  self->state.default_lifespan = lifespan;
  auto on_command = [self](dispatch_atom, command_for<A>& cmd) {
      self->state.idle_deadline = std::chrono::steady_clock::time_point::max(); // busy again
      auto rp = self->make_response_promise();
      if (self->state.busy)
        self->state.queue.emplace_back(std::move(cmd), rp);
      else
        process(self, std::move(cmd), rp);
      return rp;
  };
  auto on_appended = [self](appended_atom, uint64_t version, uint64_t first, uint64_t last) {
      auto& st = self->state;
      persistence::append_result appended{version, first, last};
      try {
        auto r = st.repo->confirm(st.stream, *st.current, *st.inflight_decision, appended);
        if (st.inflight.on_state)
          st.inflight.on_state(st.current->state);
        st.next_lifespan = r.events.empty() ? std::nullopt : lifespan_after_event(st.current->state, r.events.back());
        if (!st.next_lifespan && st.inflight.after_command)
          st.next_lifespan = st.inflight.after_command(st.current->state);
        answer(st.inflight, st.inflight_rp, dispatch_reply{true, {}, r.version, r.first_position, r.last_position});
      } catch (const std::exception& e) {
        return crash(self, st.inflight, st.inflight_rp,
                     std::string{"apply threw after its events were stored: "} + e.what());
      }
      process_next(self);
  };
  auto on_append_failed = [self](appended_atom, caf::error& err) {
      auto& st = self->state;
      if (persistence::code_of(err) == persistence::store_errc::wrong_expected_version
          && st.attempts < st.repo->options().max_retries) {
        // Another writer got there first: catch up, decide again.
        ++st.attempts;
        if (auto e = st.repo->catch_up(*st.current, st.stream)) {
          answer(st.inflight, st.inflight_rp, e);
          return process_next(self);
        }
        process(self, std::move(st.inflight), std::move(st.inflight_rp), st.attempts);
        return;
      }
      if (persistence::code_of(err) == persistence::store_errc::wrong_expected_version)
        // Out of retries: still a conflict (HTTP 409), saying how hard it tried.
        err = persistence::make_error(persistence::store_errc::wrong_expected_version,
                                      "aggregate '" + st.stream + "' still conflicted after "
                                        + std::to_string(st.attempts) + " retries (other writers keep appending): "
                                        + persistence::describe(err));
      answer(st.inflight, st.inflight_rp, std::move(err));
      process_next(self);
  };
  auto on_stop = [self](stop_atom) {
    self->state.stopping = true;
    if (!self->state.busy)
      self->quit();
  };
  auto on_idle = [self](idle_atom, uint64_t) {
    // Idle past the deadline: ask the registry to stop routing here; it
    // answers with stop. Idle, but not yet that long: wait for the rest.
    auto& st = self->state;
    auto now = std::chrono::steady_clock::now();
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
  };
  return {on_command, on_appended, on_append_failed, on_stop, on_idle};
}

template <aggregate A>
struct registry_state {
  std::unordered_map<std::string, caf::actor> open;
  std::unordered_map<caf::actor_addr, std::string> stream_of;
  // Streams whose actor is starting or stopping: their commands wait here.
  std::unordered_map<std::string, std::deque<std::pair<command_for<A>, caf::response_promise>>> waiting;
  std::unordered_map<std::string, bool> draining;
  static inline const char* name = "aggregate_registry";
};

} // namespace detail

/// Routes commands of aggregate type `A` to the actor of their stream,
/// starting it on demand through `aggregates` (a simple_one_for_one
/// supervisor whose template is `aggregate_child_spec<A>`).
template <aggregate A>
caf::behavior aggregate_registry(caf::stateful_actor<detail::registry_state<A>>* self, caf::actor aggregates) {
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    auto i = st.stream_of.find(msg.source);
    if (i == st.stream_of.end())
      return;
    auto stream = i->second;
    st.stream_of.erase(i);
    if (auto o = st.open.find(stream); o != st.open.end() && o->second.address() == msg.source)
      st.open.erase(o);
    st.draining.erase(stream);
    // Commands that arrived while it stopped: open a fresh actor for them.
    if (auto w = st.waiting.find(stream); w != st.waiting.end() && !w->second.empty())
      self->send(self, dispatch_atom::value, stream);
  });
  auto start = [self, aggregates](const std::string& stream) {
    self->state.waiting[stream]; // mark as starting
    self->request(aggregates, caf::infinite, supervision::start_child_atom::value,
                  caf::make_message(stream, caf::actor_cast<caf::actor>(self)))
      .then(
        [self, stream](caf::actor& host) {
          auto& st = self->state;
          self->monitor(host);
          st.open[stream] = host;
          st.stream_of[host.address()] = stream;
          auto queued = std::move(st.waiting[stream]);
          st.waiting.erase(stream);
          for (auto& [cmd, rp] : queued)
            rp.delegate(host, dispatch_atom::value, std::move(cmd));
        },
        [self, stream](caf::error& err) {
          auto queued = std::move(self->state.waiting[stream]);
          self->state.waiting.erase(stream);
          for (auto& [cmd, rp] : queued)
            answer(cmd, rp, err);
        });
  };
  return {
    [self, start](dispatch_atom, command_for<A>& cmd) {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      if (auto o = st.open.find(cmd.stream); o != st.open.end() && !st.draining.count(cmd.stream)) {
        rp.delegate(o->second, dispatch_atom::value, std::move(cmd));
        return rp;
      }
      bool idle = !st.waiting.count(cmd.stream) && !st.draining.count(cmd.stream);
      auto stream = cmd.stream;
      st.waiting[stream].emplace_back(std::move(cmd), rp);
      if (idle)
        start(stream);
      return rp;
    },
    [self, start](dispatch_atom, const std::string& stream) {
      // Re-open after a passivated actor is gone, for the commands that waited.
      auto& st = self->state;
      if (!st.open.count(stream) && st.waiting.count(stream) && !st.draining.count(stream))
        start(stream);
    },
    [self](detail::gone_atom, const std::string& stream) {
      auto& st = self->state;
      if (auto o = st.open.find(stream); o != st.open.end() && o->second.address() == self->current_sender()) {
        st.stream_of.erase(o->second.address());
        st.open.erase(o);
      }
    },
    [self](detail::passivate_atom, const std::string& stream) {
      auto& st = self->state;
      auto o = st.open.find(stream);
      if (o == st.open.end() || o->second.address() != self->current_sender())
        return;
      st.draining[stream] = true;
      self->send(o->second, detail::stop_atom::value);
    },
  };
}

/// The child spec template of the aggregates' simple_one_for_one supervisor:
/// temporary children (a crashed aggregate is reopened by its next command,
/// not restarted), given 5 s on shutdown to finish the command in hand
/// (its append's answer) before they are killed.
template <aggregate A>
supervision::child_spec aggregate_child_spec(const aggregate_repository<A>* repo, std::chrono::milliseconds lifespan) {
  supervision::child_spec spec;
  spec.id = "aggregate";
  spec.restart = supervision::restart_type::temporary;
  spec.shutdown = supervision::shutdown_policy::timeout(std::chrono::seconds{5});
  spec.start = [repo, lifespan](caf::actor_system& sys, const caf::message& args) -> caf::expected<caf::actor> {
    if (args.size() != 2 || !args.match_element<std::string>(0) || !args.match_element<caf::actor>(1))
      return supervision::make_error(supervision::supervision_errc::start_failed, "aggregate needs (stream, registry)");
    return caf::actor{sys.spawn(detail::aggregate_actor<A>, repo, args.get_as<std::string>(0),
                                args.get_as<caf::actor>(1), lifespan)};
  };
  return spec;
}

} // namespace sourcery

template <sourcery::aggregate A>
struct caf::allowed_unsafe_message_type<sourcery::command_for<A>> : std::true_type {};
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sourcery::dispatch_reply)
