#include "node_link.hpp"

#include <set>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "sourcery/runtime/cluster/cluster_settings.hpp"

namespace sourcery::cluster::detail {

namespace {

using sourcery::detail::command_delivery;

struct peer {
  caf::actor handle;
  bool connecting = false;
  bool nudge = false; ///< a nudge waits for the connection
  std::vector<command_delivery> waiting;
  /// Commands sent and not yet answered: a link that goes down answers them
  /// at once (a message lost with the connection never would be).
  std::unordered_map<uint64_t, std::shared_ptr<sourcery::detail::reply_slot>> out;
};

struct link_state {
  node_link_hooks hooks;
  std::unordered_map<std::string, peer> peers;
  std::unordered_map<caf::actor_addr, std::string> node_of;
  std::unordered_map<uint64_t, caf::response_promise> promises;
  uint64_t next_token = 0;
  uint64_t next_sent = 0;
  static inline const char* name = "node_link";
};

using link_actor = caf::stateful_actor<link_state>;

void later(link_actor* self, command_delivery cmd) {
  self->delayed_send(self, self->state.hooks.retry_after, retry_atom::value, std::move(cmd));
}

void send_to(link_actor* self, const std::string& node, const caf::actor& handle, command_delivery cmd) {
  if (auto* n = self->state.hooks.forwarded)
    n->fetch_add(1, std::memory_order_relaxed);
  auto left = cmd.envelope.time_left_ms();
  // The owner skips the command past its deadline; a little longer here so
  // that its answer, not our timer, says what happened.
  auto timeout = left < 0 ? std::chrono::milliseconds{60'000} : std::chrono::milliseconds{left + 250};
  auto envelope = std::make_shared<command_envelope>(cmd.envelope);
  auto reply = std::move(cmd.reply_to);
  auto id = ++self->state.next_sent;
  self->state.peers[node].out.emplace(id, reply);
  auto done = [self, node, id] {
    if (auto p = self->state.peers.find(node); p != self->state.peers.end())
      p->second.out.erase(id);
  };
  self->request(handle, timeout, forward_atom::value, std::move(cmd.envelope))
    .then([reply, done](dispatch_result& r) {
            done();
            (*reply)(std::move(r));
          },
          [self, node, envelope, reply, done](caf::error& err) {
            done();
            if (code_of_dispatch(err) == dispatch_errc::moved)
              return later(self, command_delivery{std::move(*envelope), reply});
            if (err == caf::sec::request_timeout)
              return (*reply)(make_error(dispatch_errc::timeout, "node " + node + " did not answer "
                                                                   + envelope->command_type
                                                                   + " in time (it may still complete)"));
            if (err.category() == dispatch_error_category || err.category() == persistence::store_error_category)
              return (*reply)(std::move(err)); // the command's own outcome
            (*reply)(make_error(dispatch_errc::unavailable, "the link to node " + node + " broke before it answered "
                                                              + envelope->command_type + " (it may have run): "
                                                              + describe_error(err)));
          });
}

void connect(link_actor* self, const std::string& node) {
  auto& p = self->state.peers[node];
  if (p.connecting || p.handle)
    return;
  auto address = split_node_address(node);
  auto give_up = [self, node](const std::string&) {
    auto& q = self->state.peers[node];
    q.connecting = false;
    q.nudge = false;
    // Nothing was sent: route them again (the owner may change meanwhile).
    for (auto& cmd : std::exchange(q.waiting, {}))
      later(self, std::move(cmd));
  };
  if (!address)
    return give_up(describe_error(address.error()));
  p.connecting = true;
  self->request(self->system().middleman().actor_handle(), self->state.hooks.connect_timeout,
                caf::connect_atom::value, address->first, address->second)
    .then(
      [self, node, give_up](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
        if (!ptr)
          return give_up("no actor is published there");
        auto handle = caf::actor_cast<caf::actor>(ptr);
        auto& q = self->state.peers[node];
        q.connecting = false;
        q.handle = handle;
        self->monitor(handle);
        self->state.node_of[handle.address()] = node;
        if (std::exchange(q.nudge, false))
          self->send(handle, nudge_atom::value);
        for (auto& cmd : std::exchange(q.waiting, {}))
          send_to(self, node, handle, std::move(cmd));
      },
      [give_up](caf::error& err) { give_up(describe_error(err)); });
}

caf::behavior node_link(link_actor* self, node_link_hooks hooks) {
  self->state.hooks = std::move(hooks);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    auto i = st.node_of.find(msg.source);
    if (i == st.node_of.end())
      return;
    if (auto p = st.peers.find(i->second); p != st.peers.end() && p->second.handle.address() == msg.source) {
      p->second.handle = nullptr; // connect again on the next command
      for (auto& [id, reply] : std::exchange(p->second.out, {}))
        (*reply)(make_error(dispatch_errc::unavailable, "the link to node " + i->second
                                                          + " went down before it answered (the command may have run)"));
    }
    st.node_of.erase(i);
  });
  return {
    // -- to peers ---------------------------------------------------------------
    [self](forward_atom, const std::string& node, command_delivery& cmd) {
      auto& p = self->state.peers[node];
      if (p.handle)
        return send_to(self, node, p.handle, std::move(cmd));
      p.waiting.push_back(std::move(cmd));
      connect(self, node);
    },
    [self](retry_atom, command_delivery& cmd) { self->state.hooks.reroute(std::move(cmd)); },
    [self](nudge_atom, const std::string& node) {
      auto& p = self->state.peers[node];
      if (p.handle)
        return self->send(p.handle, nudge_atom::value);
      p.nudge = true;
      connect(self, node);
    },
    // -- from peers ---------------------------------------------------------------
    [self](forward_atom, command_envelope& envelope) {
      auto promise = self->make_response_promise();
      auto token = ++self->state.next_token;
      self->state.promises.emplace(token, promise);
      self->state.hooks.serve(std::move(envelope),
                              [link = caf::actor_cast<caf::actor>(self), token](caf::expected<dispatch_result> r) {
                                if (r)
                                  caf::anon_send(link, answer_atom::value, token, std::move(*r));
                                else
                                  caf::anon_send(link, answer_atom::value, token, std::move(r.error()));
                              });
      return promise;
    },
    [self](answer_atom, uint64_t token, dispatch_result& r) {
      if (auto i = self->state.promises.find(token); i != self->state.promises.end()) {
        i->second.deliver(std::move(r));
        self->state.promises.erase(i);
      }
    },
    [self](answer_atom, uint64_t token, caf::error& err) {
      if (auto i = self->state.promises.find(token); i != self->state.promises.end()) {
        i->second.deliver(std::move(err));
        self->state.promises.erase(i);
      }
    },
    [self](nudge_atom) { self->state.hooks.nudged(); },
  };
}

} // namespace

caf::actor spawn_node_link(caf::actor_system& sys, node_link_hooks hooks) {
  return sys.spawn(node_link, std::move(hooks));
}

} // namespace sourcery::cluster::detail
