#include "cluster_registration.hpp"

#include "sourcery/supervision/detail/scoped_self.hpp"

#include <algorithm>
#include <set>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/publish.hpp>

#include "frame_limit.hpp"
#include "node_link.hpp"
#include "probe.hpp"
#include "tls_files.hpp"
#include "sourcery/persistence/error.hpp"
#include "sourcery/runtime/cluster/placement.hpp"

namespace sourcery::cluster::detail {

using sourcery::detail::command_delivery;
using sourcery::detail::reply_slot;

namespace {

caf::error moved(const std::string& node, const std::string& stream) {
  return make_error(dispatch_errc::moved, "node " + node + " does not serve the shard of " + stream + " now");
}

/// "shard:17" -> 17, or nullopt for another lease.
std::optional<uint32_t> shard_number(const std::string& lease) {
  if (lease.rfind("shard:", 0) != 0)
    return std::nullopt;
  try {
    return static_cast<uint32_t>(std::stoul(lease.substr(6)));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

} // namespace

cluster_registration::cluster_registration(context ctx, std::shared_ptr<persistence::postgres_coordination> coordination)
  : ctx_(std::move(ctx)), coordination_(std::move(coordination)),
    fence_(std::make_shared<shard_table>(ctx_.settings.name, "", ctx_.settings.shards, ctx_.settings.down_after)),
    table_(*fence_), local_(ctx_.app.system, ctx_.app.root, ctx_.app.observer) {}

caf::expected<std::unique_ptr<cluster_registration>> cluster_registration::create(context ctx) {
  if (ctx.settings.shards == 0)
    return persistence::make_error(persistence::store_errc::invalid_argument, "a cluster needs at least one shard");
  if (auto address = split_node_address(ctx.settings.node); !address)
    return address.error();
  if (!ctx.settings.listen.empty())
    if (auto address = split_node_address(ctx.settings.listen); !address)
      return address.error();
  if (auto err = check_tls_files(ctx.settings.tls))
    return err;
  // No frame a peer announces above the limit is read (frame_limit.hpp).
  if (ctx.settings.max_frame_bytes < 64 * 1024)
    return persistence::make_error(persistence::store_errc::invalid_argument,
                                   "max_frame_bytes must be at least 64 KiB ("
                                     + std::to_string(ctx.settings.max_frame_bytes) + " given)");
  if (!frame_limit_active())
    return make_error(dispatch_errc::unavailable,
                      "cannot bound the frames peers send: CAF's streams do not reach Sourcery's configure_read"
                      " (link the cluster library statically into the program)");
  set_frame_limit(ctx.settings.max_frame_bytes);
  // Plain links carry commands anyone on the network could send: on
  // loopback only, unless the user says the network is trusted.
  const auto& listen = ctx.settings.listen.empty() ? ctx.settings.node : ctx.settings.listen;
  if (auto host = split_node_address(listen)->first; !ctx.settings.tls.enabled() && !is_loopback_host(host)) {
    if (!ctx.settings.insecure_links)
      return persistence::make_error(
        persistence::store_errc::invalid_argument,
        "node " + ctx.settings.node + " would listen for peers at " + listen
          + ", not a loopback address: links between nodes are neither encrypted nor authenticated, so anyone"
            " reaching that address could send this cluster commands. Listen on 127.0.0.1 (one machine), or"
            " pass --insecure-links (cluster_settings::insecure_links) on a network you trust");
    ctx.app.log.warn("cluster", "links between nodes are neither encrypted nor authenticated (--insecure-links): "
                                "anyone who reaches this address can send this cluster commands",
                     {{"node", ctx.settings.node}, {"listen", listen}});
  }
  auto coordination = persistence::postgres_coordination::open(ctx.coordination);
  if (!coordination)
    return coordination.error();
  std::unique_ptr<cluster_registration> r{
    new cluster_registration{std::move(ctx), std::shared_ptr<persistence::postgres_coordination>{std::move(*coordination)}}};
  auto* self = r.get();
  node_link_hooks hooks;
  hooks.serve = [self](command_envelope cmd, reply done) { self->serve(std::move(cmd), std::move(done)); };
  hooks.reroute = [self](command_delivery cmd) { self->attempt(std::move(cmd)); };
  hooks.nudged = [self] {
    if (self->joined_.load())
      self->membership_->wake();
    self->wake_keeper();
  };
  hooks.forwarded = &r->counters_.forwarded;
  hooks.node = r->ctx_.settings.node;
  hooks.tls = r->ctx_.settings.tls.enabled();
  hooks.nudge_interval = std::max(std::chrono::milliseconds{10}, r->ctx_.settings.renew_every / 4);
  hooks.incarnation = [self] { return self->joined_.load() ? self->membership_->incarnation() : int64_t{0}; };
  // Before it joins, this node knows no members: it serves nobody.
  hooks.admits = [self](const std::string& node, int64_t incarnation) {
    return self->joined_.load() && self->membership_->is_up(node, incarnation);
  };
  hooks.verify = [self](const std::string& node, int64_t incarnation) {
    auto answer = [link = self->link_, node, incarnation] {
      caf::anon_send(link, verify_atom::value, node, incarnation);
    };
    {
      // Still joining: a peer that saw this node's row in the table
      // speaks before this node has read the members. It is verified
      // after the join, not refused now.
      std::lock_guard guard{self->joining_mtx_};
      if (!self->joined_.load()) {
        self->verify_after_join_.push_back(std::move(answer));
        return;
      }
    }
    self->membership_->wake(std::move(answer));
  };
  hooks.refused = [self](const char* what, const std::string& from, uint64_t count) {
    self->refused(what, from, count);
  };
  hooks.reachable = [self](const std::string& node, bool answered) { self->pinged(node, answered); };
  hooks.open_tenant = [self](const std::string& tenant) { self->want_tenant(tenant); };
  hooks.ping_timeout = r->ctx_.settings.unreachable_after / 2;
  hooks.connect_timeout = r->ctx_.settings.down_after / 2;
  r->link_ = spawn_node_link(r->ctx_.app.system, std::move(hooks));
  return r;
}

caf::error cluster_registration::join() {
  const auto& s = ctx_.settings;
  auto address = split_node_address(s.listen.empty() ? s.node : s.listen);
  if (!address)
    return address.error();
  // Every node of a cluster places by the same shard count, stored with
  // the cluster while it runs.
  auto agreed = coordination_->agree_shards(s.name, s.shards, s.down_after);
  if (!agreed)
    return agreed.error();
  if (*agreed != s.shards)
    return persistence::make_error(persistence::store_errc::invalid_argument,
                                   "cluster " + s.name + " runs with " + std::to_string(*agreed)
                                     + " shards and this node is set for " + std::to_string(s.shards)
                                     + ": every node of a cluster must use the same count");
  // Peers reach this node here before it joins: none routes to it sooner.
  auto port = s.tls.enabled() ? caf::openssl::publish(link_, address->second, address->first.c_str(), true)
                              : ctx_.app.system.middleman().publish(link_, address->second, address->first.c_str(), true);
  if (!port)
    return make_error(dispatch_errc::unavailable, "cannot listen for peers at " + (s.listen.empty() ? s.node : s.listen) + ": "
                                                    + describe_error(port.error()));
  port_ = *port;
  membership_options m;
  m.cluster = s.name;
  m.node = s.node;
  m.renew_every = s.renew_every;
  m.down_after = s.down_after;
  m.on_view = [this](const std::vector<std::string>& live) {
    std::string members;
    for (auto& n : live)
      members += (members.empty() ? "" : ",") + n;
    ctx_.app.log.info("cluster", "members changed", {{"node", ctx_.settings.node}, {"members", members}});
    wake_keeper();
  };
  m.on_declared_down = [this](const std::vector<std::string>& nodes) {
    for (auto& n : nodes)
      ctx_.app.log.warn("cluster", "member declared down (silent past down_after)",
                    {{"node", ctx_.settings.node}, {"member", n}});
  };
  m.on_down = [this](const caf::error& why, bool replaced) { went_down(why, replaced); };
  m.vote_window = s.down_after;
  m.may_join = [this] { return !isolated_.load(); };
  m.on_renewed = [this] {
    if (joined_.load())
      renew_leases();
  };
  m.on_rejoined = [this](int64_t incarnation) {
    ctx_.app.log.info("cluster", "joined again", {{"node", ctx_.settings.node}, {"incarnation", incarnation}});
    wake_keeper(); // it takes this node's share back under the new incarnation
  };
  auto joined = membership::start(coordination_, std::move(m));
  std::vector<std::function<void()>> waiting;
  {
    std::lock_guard guard{joining_mtx_};
    if (joined) {
      membership_ = std::move(*joined);
      joined_ = true;
    }
    waiting.swap(verify_after_join_);
  }
  if (!joined) {
    for (auto& answer : waiting)
      answer(); // not a member itself: it serves nobody
    return joined.error();
  }
  for (auto& answer : waiting)
    membership_->wake(std::move(answer)); // after a reading of the members that follows the peer's join
  incarnation_ = membership_->incarnation();
  owner_ = persistence::lease_owner(s.node, incarnation_);
  table_.set_owner(owner_);
  if (auto err = ctx_.app.store.fence_appends(fence_))
    return err;
  ctx_.app.log.info("cluster", "joined", {{"cluster", s.name}, {"node", s.node},
                                      {"incarnation", membership_->incarnation()},
                                      {"members", membership_->live().size()}});
  // Take this node's shards before the first command; tell the others,
  // who hand over what placement now gives this node.
  tick();
  for (auto& peer : membership_->live())
    if (peer != s.node)
      caf::anon_send(link_, nudge_atom::value, peer);
  keeper_ = std::thread{[this] { keep(); }};
  return {};
}

cluster_registration::~cluster_registration() {
  {
    std::lock_guard guard{keeper_mtx_};
    keeper_stop_ = true;
  }
  keeper_cv_.notify_all();
  if (keeper_.joinable())
    keeper_.join();
  if (link_ && port_ != 0) {
    // No peer connects while the system shuts down. With a deadline: the
    // middleman's own `unpublish` waits without one, and a broker busy with
    // hostile connections (random bytes announcing huge frames) held a
    // node's SIGTERM for 10 s.
    sourcery::detail::scoped_self self{ctx_.app.system};
    self
      ->request(links_manager(ctx_.app.system, ctx_.settings.tls.enabled()), std::chrono::seconds{1},
                caf::unpublish_atom::value,
                link_.address(), port_)
      .receive([] {}, [](const caf::error&) {});
  }
  if (link_) {
    // Stopped before this object goes, and before the membership: its
    // hooks (a peer's nudge, a ping's answer or timeout, a peer's command)
    // call into both.
    sourcery::detail::scoped_self self{ctx_.app.system};
    self->monitor(link_);
    self->send_exit(link_, caf::exit_reason::user_shutdown);
    self->receive([](const caf::down_msg&) {}, caf::after(std::chrono::seconds{10}) >> [] {});
    link_ = nullptr;
  }
  joined_ = false;
  membership_.reset(); // stops renewing (a clean leave has left already)
  (void) ctx_.app.store.fence_appends(nullptr);
}

caf::error cluster_registration::host(const sourcery::detail::aggregate_host& host) {
  return local_.host(host);
}

void cluster_registration::route(command_envelope cmd, reply done) {
  // Every command has a deadline: one without is routed again (a shard
  // between owners, a node down) until this one, not forever.
  if (cmd.deadline == std::chrono::steady_clock::time_point::max())
    cmd.deadline = std::chrono::steady_clock::now() + default_command_deadline;
  attempt(command_delivery{std::move(cmd), std::make_shared<reply_slot>(std::move(done))});
}

std::string cluster_registration::placed(uint32_t shard) const {
  std::lock_guard guard{placement_mtx_};
  return shard < placement_.size() ? placement_[shard] : std::string{};
}

void cluster_registration::place(const std::vector<std::string>& live) {
  auto owners = place_shards(live, ctx_.settings.shards);
  std::lock_guard guard{placement_mtx_};
  placement_ = std::move(owners);
}

void cluster_registration::attempt(command_delivery cmd) {
  auto& env = cmd.envelope;
  if (env.deadline != std::chrono::steady_clock::time_point::max() && std::chrono::steady_clock::now() >= env.deadline)
    return cmd.answer(make_error(dispatch_errc::timeout, "no node of cluster " + ctx_.settings.name + " served "
                                                           + env.stream_id + " before the command's deadline"));
  bool current = this->current(); // renewed within its lease's life
  if (down_.load() || !current) {
    if (down_.load() && current)
      return later(std::move(cmd)); // joined again: serving within a keeper round
    return cmd.answer(make_error(dispatch_errc::unavailable,
                                 "node " + ctx_.settings.node
                                   + " is not serving: it is out of its cluster (declared down, or cut off from the"
                                     " store) and joins again as soon as the store takes it"));
  }
  auto shard = table_.shard_of(env.stream_id);
  auto owner = placed(shard);
  if (owner.empty())
    return later(std::move(cmd));
  if (owner != ctx_.settings.node) {
    caf::anon_send(link_, forward_atom::value, owner, std::move(cmd));
    return;
  }
  if (!table_.enter(shard))
    return later(std::move(cmd)); // ours by placement, lease not (yet) held
  run_here(shard, std::move(cmd), false);
}

void cluster_registration::serve(command_envelope cmd, reply done) {
  counters_.served.fetch_add(1, std::memory_order_relaxed);
  auto shard = table_.shard_of(cmd.stream_id);
  if (down_.load() || !table_.enter(shard))
    return done(moved(ctx_.settings.node, cmd.stream_id));
  run_here(shard, command_delivery{std::move(cmd), std::make_shared<reply_slot>(std::move(done))}, true);
}

void cluster_registration::run_here(uint32_t shard, command_delivery cmd, bool from_peer) {
  // Kept to route it again if the append turns out fenced (nothing ran).
  auto again = std::make_shared<command_envelope>(cmd.envelope);
  auto done = [this, shard, again, from_peer, reply = cmd.reply_to](caf::expected<dispatch_result> r) {
    table_.leave(shard);
    if (!r && persistence::code_of(r.error()) == persistence::store_errc::fenced) {
      if (from_peer)
        return (*reply)(moved(ctx_.settings.node, again->stream_id));
      return later(command_delivery{std::move(*again), reply});
    }
    (*reply)(std::move(r));
  };
  with_tenant(again->tenant, from_peer, [&](sourcery::detail::local_registration* local) {
    if (local)
      return local->route(std::move(cmd.envelope), std::move(done));
    // Not open here: a peer's command is answered `moved` (routed again)
    // while the tenant opens; this process's own dispatch (the tenant
    // closing meanwhile) is answered.
    table_.leave(shard);
    if (from_peer) {
      want_tenant(again->tenant);
      return (*cmd.reply_to)(make_error(dispatch_errc::moved, "tenant " + again->tenant + " is opening on node "
                                                                + ctx_.settings.node));
    }
    (*cmd.reply_to)(make_error(dispatch_errc::unavailable, "tenant " + again->tenant + " is closing on node "
                                                             + ctx_.settings.node));
  });
}

template <class F>
void cluster_registration::with_tenant(const std::string& tenant, bool for_peer, F&& f) {
  if (tenant.empty())
    return f(&local_);
  std::shared_lock guard{tenants_mtx_};
  auto i = tenants_.find(tenant);
  if (i == tenants_.end())
    return f(nullptr);
  if (for_peer) // keeps it open here (registration::last_busy)
    i->second.busy->store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  f(i->second.local);
}

void cluster_registration::release_everywhere(const std::function<bool(const std::string&)>& selects) {
  local_.release_matching(selects);
  std::shared_lock guard{tenants_mtx_};
  for (auto& [name, t] : tenants_)
    t.local->release_matching(selects);
}

void cluster_registration::want_tenant(const std::string& name) {
  // Called under the lock (it does not block): once open_tenants_with
  // replaced it, the old one is never called again.
  std::shared_lock guard{tenants_mtx_};
  if (tenants_.count(name) == 0 && open_tenant_)
    open_tenant_(name);
}

void cluster_registration::open_tenants_with(std::function<void(const std::string&)> open) {
  std::unique_lock guard{tenants_mtx_};
  open_tenant_ = std::move(open);
}

void cluster_registration::attach(const std::string& name, sourcery::detail::local_registration& local,
                                  std::atomic<int64_t>& busy) {
  {
    std::unique_lock guard{tenants_mtx_};
    tenants_[name] = tenant_entry{&local, &busy};
  }
  ctx_.app.log.info("cluster", "tenant serves here", {{"node", ctx_.settings.node}, {"tenant", name}});
}

void cluster_registration::detach(const std::string& name) {
  {
    // No command for it runs here from now on (those admitted finish or
    // are dropped as its application stops).
    std::unique_lock guard{tenants_mtx_};
    tenants_.erase(name);
  }
  // Its consumers stop and their leases go, before its application does;
  // the keeper starts none of them after this.
  std::lock_guard turn{consumers_turn_};
  std::vector<std::string> mine;
  {
    std::lock_guard guard{consumers_mtx_};
    for (auto& [consumer, c] : consumers_)
      if (c.tenant == name)
        mine.push_back(consumer);
  }
  for (auto& consumer : mine)
    stop_consumer(consumer, "handler stopped (its tenant closed here)");
  {
    std::lock_guard guard{consumers_mtx_};
    for (auto& consumer : mine)
      consumers_.erase(consumer);
  }
  ctx_.app.log.info("cluster", "tenant closed here", {{"node", ctx_.settings.node}, {"tenant", name}});
}

void cluster_registration::later(command_delivery cmd) {
  counters_.rerouted.fetch_add(1, std::memory_order_relaxed);
  // Backs off, 10 ms doubling to 160 ms: a shard between owners is served
  // again within a keeper round, and a long outage costs few retries.
  auto pause = std::chrono::milliseconds{10} * (1u << std::min<uint32_t>(cmd.reroutes, 4));
  ++cmd.reroutes;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(cmd.envelope.deadline - std::chrono::steady_clock::now());
  pause = std::max(std::chrono::milliseconds{1}, std::min(pause, left));
  caf::delayed_anon_send(link_, pause, retry_atom::value, std::move(cmd));
}

void cluster_registration::went_down(const caf::error& why, bool replaced) {
  // Once per time the membership stops serving. Nothing is admitted and no
  // write passes the fence from now on; the keeper stops what ran here
  // (consumers, aggregates opened since) at its next round. It may come
  // from within membership::start, before `membership_` is set: a node
  // restarted on a loaded machine whose first renewal came too late.
  std::lock_guard guard{serving_mtx_};
  down_ = true;
  stop_all_here();
  last_lease_renewal_ = {}; // the next renewal is a new incarnation's first
  if (replaced) {
    ctx_.app.log.error("cluster", "replaced by a newer incarnation of this node: serving no more",
                   {{"node", ctx_.settings.node}, {"reason", describe_error(why)}});
    if (ctx_.app.on_failure)
      ctx_.app.on_failure(make_error(dispatch_errc::unavailable, describe_error(why)));
    return;
  }
  ctx_.app.log.error("cluster", "out of the cluster: serving no more until joined again",
                 {{"node", ctx_.settings.node}, {"reason", describe_error(why)}});
  if (ctx_.app.on_outage)
    ctx_.app.on_outage(make_error(dispatch_errc::unavailable, "node " + ctx_.settings.node
                                                          + " is out of its cluster (" + describe_error(why)
                                                          + "); it joins again as soon as the store takes it"));
  wake_keeper();
}

void cluster_registration::stop_all_here() {
  table_.lose_all();
  release_everywhere([](const std::string&) { return true; });
}

bool cluster_registration::settle_down() {
  // The consumers that ran here stop (their leases are orphaned: the
  // others expire them), and so do aggregates opened since.
  {
    std::lock_guard turn{consumers_turn_}; // a tenant's, not while it detaches
    std::vector<std::string> running;
    {
      std::lock_guard guard{consumers_mtx_};
      for (auto& [name, c] : consumers_)
        if (c.running)
          running.push_back(name);
    }
    for (auto& name : running)
      stop_consumer(name, "handler stopped (this node is out of its cluster)", false);
  }
  stop_all_here();
  std::lock_guard guard{serving_mtx_};
  if (!membership_->serving())
    return false;
  auto incarnation = membership_->incarnation();
  if (incarnation == incarnation_)
    return false; // not joined again yet
  incarnation_ = incarnation;
  owner_ = persistence::lease_owner(ctx_.settings.node, incarnation);
  table_.set_owner(owner_);
  down_ = false;
  ctx_.app.log.info("cluster", "serving again", {{"node", ctx_.settings.node}, {"incarnation", incarnation}});
  if (ctx_.app.on_recovered)
    ctx_.app.on_recovered();
  for (auto& peer : membership_->live())
    if (peer != ctx_.settings.node)
      caf::anon_send(link_, nudge_atom::value, peer);
  return true;
}

void cluster_registration::wake_keeper() {
  {
    std::lock_guard guard{keeper_mtx_};
    keeper_woken_ = true;
  }
  keeper_cv_.notify_all();
}

void cluster_registration::keep() {
  std::unique_lock guard{keeper_mtx_};
  while (!keeper_stop_) {
    keeper_cv_.wait_for(guard, ctx_.settings.renew_every, [this] { return keeper_stop_ || keeper_woken_; });
    if (keeper_stop_)
      return;
    keeper_woken_ = false;
    guard.unlock();
    tick();
    guard.lock();
  }
}

void cluster_registration::renew_leases() {
  // On the membership's thread, right after its own renewal: nothing slow
  // (drains, consumers starting or stopping, probes) runs there.
  const auto& s = ctx_.settings;
  if (down_.load())
    return;
  auto t0 = std::chrono::steady_clock::now();
  auto renewed = coordination_->renew_leases(s.name, table_.owner(), s.down_after, table_.held_leases());
  if (!renewed) {
    // Out of reach of the store: the leases lapse here (the table stops
    // trusting them) as they do there.
    ctx_.app.log.warn("cluster", "cannot renew leases", {{"node", s.node}, {"error", describe_error(renewed.error())}});
    return;
  }
  if (last_lease_renewal_ != std::chrono::steady_clock::time_point{}) {
    auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(t0 - last_lease_renewal_);
    if (gap > 3 * s.renew_every)
      ctx_.app.log.warn("cluster", "late lease renewal", {{"node", s.node}, {"since_last_ms", gap.count()}});
  }
  last_lease_renewal_ = t0;
  std::set<uint32_t> confirmed;
  std::set<std::string> confirmed_named;
  for (auto& l : *renewed)
    if (auto n = shard_number(l.name); n && *n < s.shards) {
      table_.renewed(*n, l.epoch, t0);
      confirmed.insert(*n);
    } else {
      table_.renewed_named(l.name, l.epoch, t0);
      confirmed_named.insert(l.name);
    }
  for (auto& name : table_.named_leases())
    if (!confirmed_named.count(name) && table_.lost_named_if_confirmed_before(name, t0))
      ctx_.app.log.warn("cluster", "handler lease lost (not renewed in time)", {{"node", s.node}, {"lease", name}});
  std::vector<uint32_t> lost;
  for (auto n : table_.held_shards())
    if (!confirmed.count(n) && table_.lost_if_confirmed_before(n, t0)) {
      lost.push_back(n);
      counters_.lost.fetch_add(1, std::memory_order_relaxed);
      ctx_.app.log.warn("cluster", "shard lease lost (not renewed in time)", {{"node", s.node}, {"shard", n}});
    }
  release_shards(lost); // their aggregates stop now: their state may be changed elsewhere
}

void cluster_registration::release_shards(const std::vector<uint32_t>& shards) {
  if (shards.empty())
    return;
  std::vector<bool> wanted(table_.shards(), false);
  for (auto n : shards)
    wanted[n] = true;
  release_everywhere([table = fence_, wanted = std::move(wanted)](const std::string& stream) {
    return wanted[table->shard_of(stream)];
  });
}

void cluster_registration::pinged(const std::string& node, bool answered) {
  std::lock_guard guard{reach_mtx_};
  auto& r = reach_[node];
  if (answered) {
    r.last_pong = std::chrono::steady_clock::now();
    r.first_ping = {};
  }
}

size_t cluster_registration::check_reachability(const std::vector<std::string>& peers) {
  const auto& s = ctx_.settings;
  auto now = std::chrono::steady_clock::now();
  std::vector<std::string> ask = peers;
  for (auto& v : voted_)
    if (std::find(ask.begin(), ask.end(), v) == ask.end())
      ask.push_back(v); // until it answers again (or is gone for good)
  if (ask.empty())
    return 0;
  std::vector<std::pair<std::string, bool>> verdicts;
  {
    std::lock_guard guard{reach_mtx_};
    for (auto& p : ask) {
      auto& r = reach_[p];
      if (auto incarnation = membership_->incarnation_of(p); incarnation != 0 && incarnation != r.incarnation) {
        // A process started again at this address (its join withdrew the
        // votes against the old one): it has its own time to answer.
        r = reach{now, {}, incarnation};
      }
      if (r.first_ping == std::chrono::steady_clock::time_point{})
        r.first_ping = now;
      auto heard = std::max(r.last_pong, r.first_ping);
      verdicts.emplace_back(p, now - heard > s.unreachable_after);
    }
  }
  caf::anon_send(link_, ping_atom::value, ask);
  size_t unreachable = 0;
  for (auto& [p, silent] : verdicts) {
    bool member = std::find(peers.begin(), peers.end(), p) != peers.end();
    if (silent) {
      unreachable += member;
      if (!voted_.count(p))
        ctx_.app.log.warn("cluster", "peer unreachable: voted", {{"node", s.node}, {"peer", p}});
      if (coordination_->vote(s.name, p, s.node, false))
        voted_.insert(p);
    } else if (voted_.count(p)) {
      if (coordination_->vote(s.name, p, s.node, true)) {
        voted_.erase(p);
        ctx_.app.log.info("cluster", "peer reachable again: vote withdrawn", {{"node", s.node}, {"peer", p}});
      }
    }
  }
  return unreachable;
}

void cluster_registration::tick() {
  const auto& s = ctx_.settings;
  if (auto refused = frames_refused(); refused > frames_refused_logged_) {
    ctx_.app.log.warn("cluster", "closed links whose peer announced a frame above the limit",
                      {{"node", s.node}, {"frames", refused - frames_refused_logged_},
                       {"max_frame_bytes", static_cast<int64_t>(frame_limit())}});
    frames_refused_logged_ = refused;
  }
  if (down_.load() && !settle_down()) {
    // Out of the cluster: whether this node can reach the others decides
    // whether it may join again.
    auto unreachable = check_reachability(last_peers_);
    isolated_ = last_peers_.size() >= 2 && 2 * unreachable > last_peers_.size();
    return;
  }
  if (!current())
    return; // its last renewal is older than its lease: the membership decides first (renewed, or down and
            // joining again), rather than shards taken now under an incarnation about to be replaced
  auto live = membership_->live();
  auto suspected = membership_->suspected();
  // A suspect whose address refuses connections is gone (killed, crashed):
  // declared down now, not after its whole silence.
  for (auto& suspect : std::vector<std::string>{suspected})
    if (probe(suspect, s.renew_every / 2) == probe_result::refused)
      if (auto gone = coordination_->declare_gone(s.name, suspect, 2 * s.renew_every); gone && *gone) {
        ctx_.app.log.warn("cluster", "member declared down (nothing listens at its address)",
                      {{"node", s.node}, {"member", suspect}});
        std::erase(live, suspect);
        std::erase(suspected, suspect);
        membership_->wake();
      }
  // Reachability: votes on the peers that do not answer over their links;
  // a member a majority cannot reach is declared down (even if it reaches
  // the store), and this node steps down if it cannot reach a majority.
  std::vector<std::string> peers;
  for (auto& m : live)
    if (m != s.node)
      peers.push_back(m);
  last_peers_ = peers;
  auto unreachable = check_reachability(peers);
  if (auto down = coordination_->declare_unreachable(s.name, s.down_after); down && !down->empty()) {
    for (auto& n : *down) {
      ctx_.app.log.warn("cluster", "member declared down (a majority cannot reach it)", {{"node", s.node}, {"member", n}});
      std::erase(live, n);
      std::erase(suspected, n);
    }
    membership_->wake();
  }
  if (peers.size() >= 2 && 2 * unreachable > peers.size() && !leaving_.load()) {
    isolated_ = true;
    ctx_.app.log.error("cluster", "cannot reach a majority of the other members: stepping down",
                   {{"node", s.node}, {"unreachable", unreachable}, {"others", peers.size()}});
    (void) coordination_->declare_gone(s.name, s.node, std::chrono::milliseconds{0});
    membership_->wake(); // it learns it is down at once, and stops serving
    return;
  }
  isolated_ = false;
  bool may_move = suspected.empty();
  if (auto expired = coordination_->expire_orphaned(s.name); expired && *expired > 0)
    ctx_.app.log.info("cluster", "expired the leases of members gone", {{"node", s.node}, {"leases", *expired}});
  if (leaving_.load())
    std::erase(live, s.node);
  place(live);
  std::vector<uint32_t> give;
  for (auto n : table_.held_shards())
    if (placed(n) != s.node)
      give.push_back(n);
  std::string taken;
  size_t acquire_failed = 0;
  for (uint32_t n = 0; n < s.shards; ++n) {
    if (placed(n) != s.node || table_.epoch(n) != 0)
      continue;
    auto t = std::chrono::steady_clock::now();
    auto epoch = coordination_->acquire(s.name, shard_lease(n), owner_, s.down_after);
    if (!epoch) {
      if (!acquire_failed++)
        ctx_.app.log.warn("cluster", "cannot take shards now (next round)",
                      {{"node", s.node}, {"shard", n}, {"error", describe_error(epoch.error())}});
      continue;
    }
    if (!*epoch)
      continue; // held by its previous owner until it hands over or expires
    table_.held(n, **epoch, t);
    counters_.acquired.fetch_add(1, std::memory_order_relaxed);
    taken += (taken.empty() ? "" : ",") + std::to_string(n) + "@" + std::to_string(**epoch);
  }
  if (!taken.empty())
    ctx_.app.log.info("cluster", "shards acquired", {{"node", s.node}, {"shards", taken}});
  keep_consumers(live, may_move);
  // No rebalancing while a member may be going down, and a few moves a round.
  if (give.empty() || !may_move)
    return;
  if (give.size() > s.moves_per_round)
    give.resize(s.moves_per_round);
  hand_over(give);
}

void cluster_registration::hand_over(const std::vector<uint32_t>& shards) {
  const auto& s = ctx_.settings;
  for (auto n : shards)
    table_.release(n);
  // The commands admitted before are answered before the lease goes.
  auto until = std::chrono::steady_clock::now() + s.drain_timeout;
  for (auto n : shards)
    while (table_.in_flight(n) > 0 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
  release_shards(shards); // their aggregates stop before their leases go
  std::set<std::string> told;
  std::string moved_to;
  for (auto n : shards) {
    auto epoch = table_.epoch(n);
    table_.lost(n);
    if (auto r = coordination_->release(s.name, shard_lease(n), owner_, epoch); !r)
      ctx_.app.log.warn("cluster", "cannot release a shard (it expires instead)",
                    {{"node", s.node}, {"shard", n}, {"error", describe_error(r.error())}});
    counters_.handed_over.fetch_add(1, std::memory_order_relaxed);
    auto next = placed(n);
    moved_to += (moved_to.empty() ? "" : ",") + std::to_string(n) + "->" + (next.empty() ? "?" : next);
    if (!next.empty() && next != s.node)
      told.insert(next);
  }
  if (!moved_to.empty())
    ctx_.app.log.info("cluster", "shards handed over", {{"node", s.node}, {"shards", moved_to}});
  for (auto& node : told)
    caf::anon_send(link_, nudge_atom::value, node);
}

caf::error cluster_registration::run_once(const std::string& name, std::function<caf::error()> start,
                                         std::function<void()> stop) {
  return run_once(name, std::move(start), std::move(stop), {});
}

caf::error cluster_registration::run_once(const std::string& name, std::function<caf::error()> start,
                                         std::function<void()> stop, std::string tenant) {
  {
    std::lock_guard guard{consumers_mtx_};
    consumers_[name] = consumer{std::move(start), std::move(stop), false, std::move(tenant)};
  }
  wake_keeper(); // placed here? it starts within a round trip, not a period
  return {};
}

bool cluster_registration::runs_here(const std::string& name) const {
  std::lock_guard guard{consumers_mtx_};
  auto i = consumers_.find(name);
  return i != consumers_.end() && i->second.running;
}

void cluster_registration::keep_consumers(const std::vector<std::string>& live, bool may_move) {
  const auto& s = ctx_.settings;
  std::lock_guard turn{consumers_turn_};
  struct seen {
    std::string name;
    bool running;
    std::string tenant;
  };
  std::vector<seen> all;
  {
    std::lock_guard guard{consumers_mtx_};
    for (auto& [name, c] : consumers_)
      all.push_back({name, c.running, c.tenant});
  }
  std::set<std::pair<std::string, std::string>> asked; // (node, tenant) this round
  for (auto& [name, running, tenant] : all) {
    auto lease = handler_lease(name);
    auto placed_on = owner_of(static_cast<uint32_t>(stable_hash(lease)), live).value_or("");
    // A tenant's consumer placed on a node where the tenant is not open
    // would run nowhere: that node is asked to open it (a no-op where it is).
    if (!tenant.empty() && !placed_on.empty() && placed_on != s.node && asked.emplace(placed_on, tenant).second)
      caf::anon_send(link_, tenant_atom::value, placed_on, tenant);
    if (running && table_.epoch_named(lease) == 0) { // its renewal did not go through
      stop_consumer(name, "handler lock lost");
      continue;
    }
    if (running) {
      if (placed_on != s.node && may_move)
        stop_consumer(name, "handler handed over");
      if (placed_on != s.node && may_move && !placed_on.empty())
        caf::anon_send(link_, nudge_atom::value, placed_on);
      continue;
    }
    if (placed_on != s.node)
      continue;
    auto epoch = coordination_->acquire(s.name, lease, owner_, s.down_after);
    if (!epoch || !*epoch)
      continue; // its previous node still has it: until it hands over or expires
    table_.held_named(lease, **epoch);
    std::function<caf::error()> start;
    {
      std::lock_guard guard{consumers_mtx_};
      if (auto i = consumers_.find(name); i != consumers_.end())
        start = i->second.start;
    }
    if (!start) { // removed meanwhile
      table_.lost_named(lease);
      (void) coordination_->release(s.name, lease, owner_, **epoch);
      continue;
    }
    if (auto err = start()) {
      ctx_.app.log.error("cluster", "cannot start a handler", {{"node", s.node}, {"handler", name},
                                                            {"error", describe_error(err)}});
      table_.lost_named(lease);
      (void) coordination_->release(s.name, lease, owner_, **epoch);
      continue;
    }
    {
      std::lock_guard guard{consumers_mtx_};
      if (auto i = consumers_.find(name); i != consumers_.end())
        i->second.running = true;
    }
    ctx_.app.log.info("cluster", "handler lock acquired", {{"node", s.node}, {"handler", name}, {"epoch", **epoch}});
  }
}

void cluster_registration::stop_consumer(const std::string& name, const char* why, bool release) {
  std::function<void()> stop;
  {
    std::lock_guard guard{consumers_mtx_};
    auto i = consumers_.find(name);
    if (i == consumers_.end() || !i->second.running)
      return;
    i->second.running = false;
    stop = i->second.stop;
  }
  stop(); // before the lease goes: never two running at once
  auto lease = handler_lease(name);
  auto epoch = table_.epoch_named(lease);
  table_.lost_named(lease);
  if (epoch != 0 && release)
    if (auto r = coordination_->release(ctx_.settings.name, lease, owner_, epoch); !r)
      ctx_.app.log.warn("cluster", "cannot release a handler lease (it expires instead)",
                    {{"node", ctx_.settings.node}, {"lease", lease}, {"error", describe_error(r.error())}});
  ctx_.app.log.info("cluster", why, {{"node", ctx_.settings.node}, {"handler", name}});
}

void cluster_registration::leave() {
  if (leaving_.exchange(true) || !membership_)
    return;
  {
    std::lock_guard guard{keeper_mtx_};
    keeper_stop_ = true;
  }
  keeper_cv_.notify_all();
  if (keeper_.joinable())
    keeper_.join();
  auto live = membership_->live();
  std::erase(live, ctx_.settings.node);
  place(live); // commands dispatched here from now on go to the others
  if (!down_.load())
    hand_over(table_.held_shards());
  std::vector<std::string> names;
  {
    std::lock_guard guard{consumers_mtx_};
    for (auto& [name, c] : consumers_)
      names.push_back(name);
  }
  for (auto& name : names)
    stop_consumer(name, "handler handed over");
  if (auto err = membership_->leave())
    ctx_.app.log.warn("cluster", "cannot record the leave (the others will declare this node down)",
                  {{"node", ctx_.settings.node}, {"error", describe_error(err)}});
  for (auto& peer : live)
    caf::anon_send(link_, nudge_atom::value, peer);
  ctx_.app.log.info("cluster", "left", {{"node", ctx_.settings.node}});
}

caf::error cluster_registration::outage() const {
  if (!current() && !leaving_.load())
    return make_error(dispatch_errc::unavailable,
                      "node " + node() + " has not renewed its membership within its lease's life");
  return {};
}

void cluster_registration::refused(const char* what, const std::string& from, uint64_t count) {
  auto& c = counters_;
  std::string_view kind{what};
  (kind == "batch" ? c.refused_batches : kind == "nudge" ? c.refused_nudges : c.dropped_unknown)
    .fetch_add(count, std::memory_order_relaxed);
  // Logged once a second at most: a hostile peer must not fill the log.
  auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  auto last = c.refusal_logged.load();
  if (now - last < std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::seconds{1}).count()
      || !c.refusal_logged.compare_exchange_strong(last, now))
    return;
  if (kind == "unknown")
    ctx_.app.log.warn("cluster", "dropped a message a peer sent that no node sends", {{"node", ctx_.settings.node}});
  else
    ctx_.app.log.warn("cluster", "refused a peer that is not an up member of the cluster",
                      {{"node", ctx_.settings.node}, {"what", what}, {"from", from}});
}

registration_description cluster_registration::describe() const {
  return {node(), members(), shards_owned()};
}

void cluster_registration::render_metrics(std::string& out) const {
  auto metric = [&](const char* name, const char* help, const char* type, uint64_t v) {
    out += std::string{"# HELP "} + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " "
           + std::to_string(v) + "\n";
  };
  const auto& c = counters_;
  metric("sourcery_cluster_members", "Live members of the cluster, as this node sees them.", "gauge", members());
  metric("sourcery_cluster_shards_owned", "Shards this node serves now.", "gauge", shards_owned());
  metric("sourcery_cluster_commands_forwarded_total", "Commands sent to the node owning their aggregate.", "counter",
         c.forwarded.load());
  metric("sourcery_cluster_commands_served_total", "Commands other nodes sent here.", "counter", c.served.load());
  metric("sourcery_cluster_commands_rerouted_total", "Commands routed again (shard moving, moved, fenced).",
         "counter", c.rerouted.load());
  metric("sourcery_cluster_shards_acquired_total", "Shards this node took.", "counter", c.acquired.load());
  metric("sourcery_cluster_handoffs_total", "Shards this node handed over cleanly.", "counter",
         c.handed_over.load());
  metric("sourcery_cluster_shards_lost_total", "Shards whose lease ran out under this node.", "counter",
         c.lost.load());
  out += "# HELP sourcery_cluster_refused_total Messages from peers refused: batches and nudges from nodes that are"
         " not up members (incarnation included), messages no node sends.\n"
         "# TYPE sourcery_cluster_refused_total counter\n";
  out += "sourcery_cluster_refused_total{what=\"batch\"} " + std::to_string(c.refused_batches.load()) + "\n";
  out += "sourcery_cluster_refused_total{what=\"nudge\"} " + std::to_string(c.refused_nudges.load()) + "\n";
  out += "sourcery_cluster_refused_total{what=\"unknown\"} " + std::to_string(c.dropped_unknown.load()) + "\n";
  metric("sourcery_cluster_frames_refused_total",
         "Links closed because the peer announced a frame above max_frame_bytes.", "counter", frames_refused());
}

} // namespace sourcery::cluster::detail
