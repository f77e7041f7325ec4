#include "node_link.hpp"

#include <map>
#include <set>
#include <string_view>
#include <utility>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/manager.hpp>

#include "frame_limit.hpp"
#include "sourcery/runtime/cluster/cluster_settings.hpp"

namespace sourcery::cluster::detail {

void add_link_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<forward_batch>("sourcery.forward_batch");
  cfg.add_message_type<answer_batch>("sourcery.answer_batch");
}

namespace {

using sourcery::detail::command_delivery;

struct peer {
  caf::actor handle;
  bool connecting = false;
  bool nudge = false;    ///< a nudge waits for the connection
  bool flushing = false; ///< a flush is on its way through the mailbox
  bool ping = false;     ///< a ping waits for the connection
  std::set<std::string> tenants; ///< asked to open, waiting for the connection
  std::vector<command_delivery> waiting; ///< for the connection
  std::vector<command_delivery> queued;  ///< for the next flush
  /// Sent and not yet answered (the envelope kept: `moved` sends it again).
  /// A link that goes down answers them at once.
  std::unordered_map<uint64_t, command_delivery> out;
};

/// Answers to a peer's commands, on their way back.
struct returning {
  caf::actor to;
  bool flushing = false;
  std::vector<forward_answer> answers;
};

/// What a sender being verified sent meanwhile: refused if it is not a member.
struct unverified {
  uint64_t batches = 0;
  uint64_t nudges = 0;
};

struct link_state {
  node_link_hooks hooks;
  std::map<std::pair<std::string, int64_t>, unverified> verifying;
  std::chrono::steady_clock::time_point last_nudge; ///< taken, for the rate limit
  bool nudge_held = false; ///< one waits for the end of the interval
  std::unordered_map<std::string, peer> peers;
  std::unordered_map<caf::actor_addr, std::string> node_of;
  std::unordered_map<caf::actor_addr, returning> back;
  uint64_t next_id = 0;
  static inline const char* name = "node_link";
};

using link_actor = caf::stateful_actor<link_state>;

/// Whether this node opens the link to `node`. Over TLS only one of the two
/// does (the smaller name): CAF 0.17's OpenSSL module loses messages when
/// two nodes each open a connection to the other (it writes before the
/// second handshake ends; fixed in CAF 0.18). The other learns the link
/// from the opener's hello, sent with each of its pings.
bool opens_link(const link_state& st, const std::string& node) {
  return !st.hooks.tls || st.hooks.node < node;
}

/// The incarnation this node serves as now (0 before it joins).
int64_t my_incarnation(const link_state& st) {
  return st.hooks.incarnation ? st.hooks.incarnation() : 0;
}

/// A hello or nudge to a peer: both name this node and its incarnation.
template <class Atom>
void send_signed(link_actor* self, const caf::actor& handle, Atom what) {
  self->send(handle, what, self->state.hooks.node, my_incarnation(self->state));
}

/// Pings `node` over its link (connected).
void ping(link_actor* self, const std::string& node, const caf::actor& handle) {
  if (self->state.hooks.tls && opens_link(self->state, node))
    send_signed(self, handle, hello_atom::value); // each round: the peer may have lost it
  self->request(handle, self->state.hooks.ping_timeout, ping_atom::value)
    .then([self, node](pong_atom) { self->state.hooks.reachable(node, true); },
          [self, node](caf::error&) { self->state.hooks.reachable(node, false); });
}

void later(link_actor* self, command_delivery cmd) {
  self->delayed_send(self, self->state.hooks.retry_after, retry_atom::value, std::move(cmd));
}

/// Sends what is queued for `node`: one message, or several when together
/// they would exceed what the peer reads in one frame (frame_limit.hpp). A
/// command that alone would exceed it is answered `too_large`, unsent.
void flush(link_actor* self, const std::string& node) {
  auto& p = self->state.peers[node];
  p.flushing = false;
  if (p.queued.empty())
    return;
  if (!p.handle) {
    for (auto& cmd : std::exchange(p.queued, {}))
      later(self, std::move(cmd)); // nothing was sent
    return;
  }
  auto size_of = [](const command_delivery& cmd) { return wire_size(cmd.envelope); };
  for (auto& run : in_frames(std::exchange(p.queued, {}), size_of)) {
    if (auto size = size_of(run.front()); size > frame_budget()) {
      auto& env = run.front().envelope;
      run.front().answer(too_large(env.command_type + " to " + env.stream_id + " (nothing was executed)", size));
      continue; // alone in its run
    }
    forward_batch batch;
    batch.from = self->state.hooks.node;
    batch.incarnation = my_incarnation(self->state);
    for (auto& cmd : run) {
      auto id = ++self->state.next_id;
      batch.ids.push_back(id);
      batch.envelopes.push_back(cmd.envelope);
      p.out.emplace(id, std::move(cmd));
    }
    self->send(p.handle, forward_atom::value, std::move(batch));
  }
}

void enqueue(link_actor* self, const std::string& node, command_delivery cmd) {
  if (auto* n = self->state.hooks.forwarded)
    n->fetch_add(1, std::memory_order_relaxed);
  auto& p = self->state.peers[node];
  p.queued.push_back(std::move(cmd));
  if (!p.flushing) {
    p.flushing = true;
    self->send(self, flush_atom::value, node); // after what the mailbox holds now
  }
}

/// No link to `node` (a connection failed, or its hello never came):
/// what waited for it is routed again, a ping waiting is unanswered.
void link_failed(link_actor* self, const std::string& node) {
  auto& p = self->state.peers[node];
  p.connecting = false;
  p.nudge = false;
  p.tenants.clear(); // asked again at the next keeper round
  if (std::exchange(p.ping, false) && self->state.hooks.reachable)
    self->state.hooks.reachable(node, false);
  // Nothing was sent: route them again (the owner may change meanwhile).
  for (auto& cmd : std::exchange(p.waiting, {}))
    later(self, std::move(cmd));
}

/// The link to `node` is up (connected, or its hello came): send what waited.
void link_up(link_actor* self, const std::string& node, const caf::actor& handle) {
  auto& p = self->state.peers[node];
  p.connecting = false;
  p.handle = handle;
  self->monitor(handle);
  self->state.node_of[handle.address()] = node;
  if (std::exchange(p.nudge, false))
    send_signed(self, handle, nudge_atom::value);
  for (auto& tenant : std::exchange(p.tenants, {}))
    self->send(handle, tenant_atom::value, self->state.hooks.node, my_incarnation(self->state), tenant);
  if (std::exchange(p.ping, false))
    ping(self, node, handle);
  for (auto& cmd : std::exchange(p.waiting, {}))
    enqueue(self, node, std::move(cmd));
}

void connect(link_actor* self, const std::string& node) {
  auto& p = self->state.peers[node];
  if (p.connecting || p.handle)
    return;
  if (!opens_link(self->state, node)) {
    // The peer opens it (its next ping round): wait that long, at most.
    p.connecting = true;
    self->delayed_send(self, self->state.hooks.connect_timeout, hello_atom::value, node);
    return;
  }
  auto address = split_node_address(node);
  if (!address)
    return link_failed(self, node);
  p.connecting = true;
  self->request(links_manager(self->system(), self->state.hooks.tls), self->state.hooks.connect_timeout,
                caf::connect_atom::value, address->first, address->second)
    .then(
      [self, node](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
        if (!ptr)
          return link_failed(self, node); // no actor is published there
        link_up(self, node, caf::actor_cast<caf::actor>(ptr));
      },
      [self, node](caf::error&) { link_failed(self, node); });
}

/// Whether a peer's message comes from an up member. If not, it is
/// refused -- at once, or once a fresh reading of the members confirms it
/// (a member that just joined is in the table, not yet in this node's view).
bool admitted(link_actor* self, const char* what, const std::string& from, int64_t incarnation) {
  auto& st = self->state;
  auto& hooks = st.hooks;
  if (!hooks.admits || hooks.admits(from, incarnation))
    return true;
  bool batch = std::string_view{what} == "batch";
  auto key = std::make_pair(from, incarnation);
  auto pending = st.verifying.find(key);
  if (pending == st.verifying.end()) {
    if (!hooks.verify || st.verifying.size() >= hooks.max_verifying) {
      if (hooks.refused)
        hooks.refused(what, from, 1);
      return false;
    }
    pending = st.verifying.emplace(key, unverified{}).first;
    hooks.verify(from, incarnation);
  }
  ++(batch ? pending->second.batches : pending->second.nudges);
  return false;
}

/// Takes a peer's nudge now, or at the end of the rate limit's interval
/// (nudges within it are taken together).
void take_nudge(link_actor* self) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  if (now - st.last_nudge >= st.hooks.nudge_interval) {
    st.last_nudge = now;
    if (st.hooks.nudged)
      st.hooks.nudged();
  } else if (!st.nudge_held) {
    st.nudge_held = true;
    self->delayed_send(self, st.last_nudge + st.hooks.nudge_interval - now, nudge_atom::value, true);
  }
}

/// A peer's answer to one of our commands.
void answered(link_actor* self, peer& p, forward_answer& a) {
  auto i = p.out.find(a.id);
  if (i == p.out.end())
    return; // answered already (its link went down, or it timed out here)
  auto cmd = std::move(i->second);
  p.out.erase(i);
  if (a.ok)
    return cmd.answer(std::move(a.result));
  if (code_of_dispatch(a.error) == dispatch_errc::moved)
    return later(self, std::move(cmd));
  cmd.answer(std::move(a.error));
}

caf::behavior node_link(link_actor* self, node_link_hooks hooks) {
  self->state.hooks = std::move(hooks);
  // Anything else a peer sends is dropped, counted -- not printed: a
  // hostile peer must not fill the log.
  self->set_default_handler([](caf::scheduled_actor* me, caf::message_view& x) -> caf::result<caf::message> {
    auto* link = static_cast<link_actor*>(me);
    if (link->state.hooks.refused)
      link->state.hooks.refused("unknown", {}, 1);
    return caf::drop(me, x);
  });
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    st.back.erase(msg.source);
    auto i = st.node_of.find(msg.source);
    if (i == st.node_of.end())
      return;
    if (auto p = st.peers.find(i->second); p != st.peers.end() && p->second.handle.address() == msg.source) {
      p->second.handle = nullptr; // connect again on the next command
      for (auto& [id, cmd] : std::exchange(p->second.out, {}))
        cmd.answer(make_error(dispatch_errc::unavailable, "the link to node " + i->second
                                                            + " went down before it answered (the command may have run)"));
    }
    st.node_of.erase(i);
  });
  self->delayed_send(self, std::chrono::seconds{1}, sweep_atom::value);
  return {
    // -- to peers ---------------------------------------------------------------
    [self](forward_atom, const std::string& node, command_delivery& cmd) {
      auto& p = self->state.peers[node];
      if (p.handle)
        return enqueue(self, node, std::move(cmd));
      p.waiting.push_back(std::move(cmd));
      connect(self, node);
    },
    [self](flush_atom, const std::string& node) { flush(self, node); },
    [self](retry_atom, command_delivery& cmd) { self->state.hooks.reroute(std::move(cmd)); },
    [self](nudge_atom, const std::string& node) {
      auto& p = self->state.peers[node];
      if (p.handle)
        return send_signed(self, p.handle, nudge_atom::value);
      p.nudge = true;
      connect(self, node);
    },
    [self](tenant_atom, const std::string& node, const std::string& tenant) {
      auto& p = self->state.peers[node];
      if (p.handle)
        return self->send(p.handle, tenant_atom::value, self->state.hooks.node, my_incarnation(self->state), tenant);
      p.tenants.insert(tenant);
      connect(self, node);
    },
    [self](answer_atom, answer_batch& batch) {
      auto& st = self->state;
      auto from = st.node_of.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (from == st.node_of.end())
        return;
      auto& p = st.peers[from->second];
      for (auto& a : batch.answers)
        answered(self, p, a);
    },
    [self](sweep_atom) {
      // A command whose answer never came on a link that never closed.
      auto now = std::chrono::steady_clock::now();
      for (auto& [node, p] : self->state.peers)
        for (auto i = p.out.begin(); i != p.out.end();) {
          auto& env = i->second.envelope;
          if (env.deadline != std::chrono::steady_clock::time_point::max()
              && now > env.deadline + self->state.hooks.answer_grace) {
            i->second.answer(make_error(dispatch_errc::timeout, "node " + node + " did not answer "
                                                                  + env.command_type + " in time (it may have run)"));
            i = p.out.erase(i);
          } else {
            ++i;
          }
        }
      self->delayed_send(self, std::chrono::seconds{1}, sweep_atom::value);
    },
    // -- from peers ---------------------------------------------------------------
    [self](forward_atom, forward_batch& batch) {
      auto from = caf::actor_cast<caf::actor>(self->current_sender());
      if (!from)
        return;
      auto link = caf::actor_cast<caf::actor>(self);
      if (!admitted(self, "batch", batch.from, batch.incarnation)) {
        // Nothing runs. `moved`: a member this node has not seen join yet
        // (its view is one renewal old at most) routes them again.
        answer_batch refusal;
        for (size_t i = 0; i < batch.ids.size() && i < batch.envelopes.size(); ++i)
          refusal.answers.push_back(
            forward_answer{batch.ids[i], false, {},
                           make_error(dispatch_errc::moved, "node " + self->state.hooks.node
                                                              + " serves only the up members of its cluster")});
        self->send(from, answer_atom::value, std::move(refusal));
        return;
      }
      for (size_t i = 0; i < batch.envelopes.size() && i < batch.ids.size(); ++i)
        self->state.hooks.serve(std::move(batch.envelopes[i]),
                                [link, from, id = batch.ids[i]](caf::expected<dispatch_result> r) {
                                  forward_answer a;
                                  a.id = id;
                                  a.ok = static_cast<bool>(r);
                                  if (r)
                                    a.result = std::move(*r);
                                  else
                                    a.error = std::move(r.error());
                                  caf::anon_send(link, answer_atom::value, from, std::move(a));
                                });
    },
    [self](answer_atom, const caf::actor& to, forward_answer& a) {
      auto& r = self->state.back[to.address()];
      if (!r.to)
        self->monitor(to); // forgotten when it goes
      r.to = to;
      r.answers.push_back(std::move(a));
      if (!r.flushing) {
        r.flushing = true;
        self->send(self, flush_atom::value, to);
      }
    },
    [self](flush_atom, const caf::actor& to) {
      auto i = self->state.back.find(to.address());
      if (i == self->state.back.end())
        return;
      i->second.flushing = false;
      // In frames the peer reads, as commands are (flush). An answer that
      // alone would exceed one is replaced by `too_large`: the command ran.
      auto size_of = [](const forward_answer& a) -> size_t { return a.ok ? wire_size(a.result) : 256; };
      for (auto& run : in_frames(std::exchange(i->second.answers, {}), size_of)) {
        if (auto& a = run.front(); a.ok && size_of(a) > frame_budget()) {
          a.error = too_large("the answer of a command that ran on node " + self->state.hooks.node
                                + " (its events are stored)",
                              size_of(a));
          a.ok = false;
          a.result = {};
        }
        self->send(to, answer_atom::value, answer_batch{std::move(run)});
      }
    },
    [self](nudge_atom, const std::string& from, int64_t incarnation) {
      if (admitted(self, "nudge", from, incarnation))
        take_nudge(self);
    },
    [self](tenant_atom, const std::string& from, int64_t incarnation, const std::string& tenant) {
      // Heard from up members only (as a nudge), and asked again each
      // keeper round: one refused while its sender is verified is not kept.
      if (admitted(self, "nudge", from, incarnation) && self->state.hooks.open_tenant)
        self->state.hooks.open_tenant(tenant);
    },
    [self](verify_atom, const std::string& from, int64_t incarnation) {
      auto& st = self->state;
      auto i = st.verifying.find(std::make_pair(from, incarnation));
      if (i == st.verifying.end())
        return;
      auto seen = i->second;
      st.verifying.erase(i);
      if (st.hooks.admits(from, incarnation)) {
        // A member after all (it had just joined): its batches were
        // answered `moved` and come again; its nudge was this reading.
        return;
      }
      if (st.hooks.refused) {
        if (seen.batches > 0)
          st.hooks.refused("batch", from, seen.batches);
        if (seen.nudges > 0)
          st.hooks.refused("nudge", from, seen.nudges);
      }
    },
    [self](hello_atom, const std::string& node) {
      // No hello within the connect timeout: as a failed connection.
      auto& p = self->state.peers[node];
      if (!p.handle && p.connecting)
        link_failed(self, node);
    },
    [self](hello_atom, const std::string& from, int64_t incarnation) {
      auto& st = self->state;
      // A link this node waits for (to ping a member it voted unreachable,
      // now out of the cluster and asking to join again) is taken from its
      // hello though the sender is no up member: only pings cross it until
      // it is one again, and without it the two would never hear each other.
      auto& p = st.peers[from];
      bool awaited = p.connecting && !p.handle;
      if (opens_link(st, from) || (!awaited && !admitted(self, "nudge", from, incarnation)))
        return;
      auto handle = caf::actor_cast<caf::actor>(self->current_sender());
      if (handle && st.peers[from].handle != handle)
        link_up(self, from, handle);
    },
    [self](nudge_atom, bool) {
      self->state.nudge_held = false;
      take_nudge(self);
    },
    [self](ping_atom, const std::vector<std::string>& nodes) {
      for (auto& node : nodes) {
        auto& p = self->state.peers[node];
        if (p.handle) {
          ping(self, node, p.handle);
        } else {
          p.ping = true;
          connect(self, node);
        }
      }
    },
    [](ping_atom) { return pong_atom::value; },
  };
}

} // namespace

caf::io::middleman_actor links_manager(caf::actor_system& sys, bool tls) {
  return tls ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
}

caf::actor spawn_node_link(caf::actor_system& sys, node_link_hooks hooks) {
  return sys.spawn(node_link, std::move(hooks));
}

} // namespace sourcery::cluster::detail
