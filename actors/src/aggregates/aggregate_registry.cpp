#include "sourcery/actors/aggregates/detail/aggregate_registry.hpp"

#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>

#include "sourcery/actors/aggregates/detail/command_delivery.hpp"
#include "sourcery/supervision/supervisor.hpp"

namespace sourcery::detail {

namespace {

struct registry_state {
  std::unordered_map<std::string, caf::actor> open;
  std::unordered_map<caf::actor_addr, std::string> stream_of;
  // Streams whose actor is starting or stopping: their commands wait here.
  std::unordered_map<std::string, std::deque<command_delivery>> waiting;
  std::unordered_map<std::string, bool> draining;
  static inline const char* name = "aggregate_registry";
};

using registry_actor = caf::stateful_actor<registry_state>;

void start(registry_actor* self, const caf::actor& aggregates, const std::string& stream) {
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
        for (auto& cmd : queued)
          self->send(host, dispatch_atom::value, std::move(cmd));
      },
      [self, stream](caf::error& err) {
        auto queued = std::move(self->state.waiting[stream]);
        self->state.waiting.erase(stream);
        for (auto& cmd : queued)
          cmd.answer(err);
      });
}

caf::behavior registry(registry_actor* self, caf::actor aggregates) {
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
  return {
    [self, aggregates](dispatch_atom, command_delivery& cmd) {
      auto& st = self->state;
      const auto& stream = cmd.envelope.stream_id;
      if (auto o = st.open.find(stream); o != st.open.end() && !st.draining.count(stream)) {
        self->send(o->second, dispatch_atom::value, std::move(cmd));
        return;
      }
      bool idle = !st.waiting.count(stream) && !st.draining.count(stream);
      auto key = stream;
      st.waiting[key].push_back(std::move(cmd));
      if (idle)
        start(self, aggregates, key);
    },
    [self, aggregates](dispatch_atom, const std::string& stream) {
      // Re-open after a passivated actor is gone, for the commands that waited.
      auto& st = self->state;
      if (!st.open.count(stream) && st.waiting.count(stream) && !st.draining.count(stream))
        start(self, aggregates, stream);
    },
    [self](gone_atom, const std::string& stream) {
      auto& st = self->state;
      if (auto o = st.open.find(stream); o != st.open.end() && o->second.address() == self->current_sender()) {
        st.stream_of.erase(o->second.address());
        st.open.erase(o);
      }
    },
    [self](release_atom, const stream_filter& filter) {
      // Their shard moved to another node: the state here is stale from now
      // on. Each actor stops after the commands it has queued.
      auto& st = self->state;
      for (auto& [stream, actor] : st.open) {
        if (st.draining.count(stream) || !filter.selects(stream))
          continue;
        st.draining[stream] = true;
        self->send(actor, stop_atom::value);
      }
    },
    [self](passivate_atom, const std::string& stream) {
      auto& st = self->state;
      auto o = st.open.find(stream);
      if (o == st.open.end() || o->second.address() != self->current_sender())
        return;
      st.draining[stream] = true;
      self->send(o->second, stop_atom::value);
    },
  };
}

} // namespace

caf::actor spawn_aggregate_registry(caf::actor_system& sys, caf::actor aggregates) {
  return sys.spawn(registry, std::move(aggregates));
}

} // namespace sourcery::detail
