#pragma once

// The cluster's registration (registration.hpp): each aggregate runs on the
// node that holds its shard's lease, and a command dispatched anywhere is
// sent there and answered where it was dispatched.
//
// A command to stream s: shard = shard_of(s); the owner by placement over
// the live members. This node, if it holds the lease: run it here (the
// local registration). Another node: send it over the node link; that node
// runs it if it holds the lease, else answers `moved`. A command that finds
// no server yet (a shard between owners, a peer out of reach before it was
// sent, `moved`, an append `fenced`) is routed again after a pause until its
// deadline: it runs once, or fails with timeout or unavailable.
//
// The keeper (a thread) follows the membership: it renews the leases held,
// expires those of members gone, takes the shards placement gives this node
// and hands over those it gives to others -- no commands admitted, those in
// flight drained, the aggregates stopped, the lease released, the new owner
// nudged -- paced, and never while a member is suspected.

#include <atomic>
#include <map>
#include <set>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include <caf/actor.hpp>

#include "../registration/local_registration.hpp"
#include "sourcery/actors/aggregates/detail/command_delivery.hpp"
#include "shard_table.hpp"
#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/postgres_coordination.hpp"
#include "sourcery/runtime/cluster/cluster_settings.hpp"
#include "sourcery/runtime/cluster/membership.hpp"
#include "sourcery/runtime/observability/log.hpp"

namespace sourcery::cluster::detail {

struct cluster_counters {
  std::atomic<uint64_t> forwarded{0};    ///< commands sent to other nodes
  std::atomic<uint64_t> served{0};       ///< commands other nodes sent here
  std::atomic<uint64_t> rerouted{0};     ///< commands routed again (moved, between owners)
  std::atomic<uint64_t> acquired{0};     ///< shards taken
  std::atomic<uint64_t> handed_over{0};  ///< shards given up cleanly
  std::atomic<uint64_t> lost{0};         ///< shards whose lease ran out under us
  std::atomic<uint64_t> refused_batches{0}; ///< from peers that are not up members
  std::atomic<uint64_t> refused_nudges{0};
  std::atomic<uint64_t> dropped_unknown{0}; ///< messages the link does not know
  /// When a refusal was last logged (steady ticks): once a second at most.
  std::atomic<int64_t> refusal_logged{0};
};

/// The deadline of a command dispatched without one.
inline constexpr std::chrono::seconds default_command_deadline{30};

class cluster_registration final : public registration {
public:
  struct context {
    /// What the application gives every registration; its `on_outage`
    /// is called when this node stops serving (declared down, or cut off
    /// from the store past `down_after`: it joins again by itself, then
    /// `on_recovered`), its `on_failure` when another process joined as
    /// this node (this one stops for good).
    registration_context app;
    persistence::coordination_options coordination;
    cluster_settings settings;
  };

  /// Connects to the store's cluster tables. Errors: invalid_argument (a
  /// bad node address, no shards), the store's.
  static caf::expected<std::unique_ptr<cluster_registration>> create(context ctx);
  /// Joins, once every aggregate type is hosted: listens for peers at
  /// `settings.node`, joins the membership, fences the store's appends,
  /// takes this node's shards and starts the keeper. Errors: unavailable
  /// (the address cannot be listened on), invalid_argument (a store that
  /// cannot be shared), the store's.
  caf::error join();
  ~cluster_registration() override;

  caf::error host(const sourcery::detail::aggregate_host& host) override;
  caf::error start() override { return join(); }
  /// Hands every shard over (drained, released) and leaves the membership,
  /// so that nothing waits for a lease to run out. Idempotent.
  void stop() override { leave(); }
  void route(command_envelope cmd, reply done) override;

  /// A handler, projection or process manager that runs on one node of the
  /// cluster at a time, placed like a shard under lease handler_lease(name):
  /// `start` runs (on the keeper's thread) once this node holds the lease,
  /// `stop` when it loses it or hands it over. Its checkpoint writes are
  /// fenced with the lease.
  caf::error run_once(const std::string& name, std::function<caf::error()> start,
                      std::function<void()> stop) override;
  /// Whether consumer `name` runs on this node now.
  bool runs_here(const std::string& name) const override;
  /// The leases this node holds, for fencing writes (the read models').
  std::shared_ptr<const persistence::append_fence> fence() const override { return fence_; }
  /// Not yet told `on_outage`, but its last renewal is older than its
  /// lease: paused, or cut off from the store (its membership's thread says
  /// so at its next run).
  caf::error outage() const override;
  /// The cluster's gauges and counters.
  void render_metrics(std::string& out) const override;
  registration_description describe() const override;

  // -- tenants (application_host.hpp; tenant_registration.hpp) ------------------
  /// Tenant `name`'s registration: its aggregates and consumers run in its
  /// own application, placed, forwarded and fenced by this node.
  std::shared_ptr<const registration_provider> tenant_provider(const std::string& name) override;
  void open_tenants_with(std::function<void(const std::string& name)> open) override;
  /// Tenant `name` serves here from now on: commands for it that this node
  /// runs go to `local` (the tenant's own aggregates).
  /// `busy` is set to the time of each command a peer sends for it.
  void attach(const std::string& name, sourcery::detail::local_registration& local,
              std::atomic<int64_t>& busy);
  /// Tenant `name` serves here no more: its consumers stop (their leases
  /// released), commands for it are routed elsewhere or opened again.
  void detach(const std::string& name);
  /// The leases this node holds, for the tenants' fences.
  const std::shared_ptr<shard_table>& table() const noexcept { return fence_; }
  /// The schema of the cluster's tables (the tenants' fences check its leases).
  const std::string& coordination_schema() const noexcept { return ctx_.coordination.schema; }
  /// As `run_once`, for a consumer of tenant `tenant` (`name`: tenant/consumer).
  caf::error run_once(const std::string& name, std::function<caf::error()> start, std::function<void()> stop,
                      std::string tenant);

  /// A peer's batch or nudge refused, or an unknown message dropped (the link's hook).
  void refused(const char* what, const std::string& from, uint64_t count);
  const cluster_counters& counters() const noexcept { return counters_; }
  size_t members() const { return membership_ ? membership_->live().size() : 0; }
  size_t shards_owned() const { return table_.held_shards().size(); }
  const std::string& node() const noexcept { return ctx_.settings.node; }
  bool serving() const noexcept { return membership_ && membership_->serving() && !leaving_.load(); }
  /// Renewed within its lease's life (leaving or not).
  bool current() const noexcept { return membership_ && membership_->serving(); }

private:
  cluster_registration(context ctx, std::shared_ptr<persistence::postgres_coordination> coordination);

  /// stop(): hands every shard over and leaves the membership.
  void leave();

  /// Routes `cmd`: here, to its owner, or again later.
  void attempt(sourcery::detail::command_delivery cmd);
  /// A peer's command: run here if this node serves its shard, else `moved`.
  void serve(command_envelope cmd, reply done);
  /// Runs an admitted command here; a `fenced` answer routes it again.
  void run_here(uint32_t shard, sourcery::detail::command_delivery cmd, bool from_peer);
  void later(sourcery::detail::command_delivery cmd);

  /// The owner of `shard` by placement over the live members ("" if none).
  std::string placed(uint32_t shard) const;
  void place(const std::vector<std::string>& live);
  void went_down(const caf::error& why, bool replaced);
  /// Stops admitting and fencing everything, and the aggregates open here.
  void stop_all_here();
  /// On the keeper, while down: stops what ran here; once the membership
  /// joined again, serves as the new incarnation. True: serving again.
  bool settle_down();

  void keep();   ///< the keeper's loop
  void tick();   ///< one round: expire, take, hand over, consumers
  /// Renews this node's leases (on the membership's thread, after its own
  /// renewal); a shard lease not renewed is lost, its aggregates stopped.
  void renew_leases();
  /// Stops the aggregates of `shards` open on this node (one pass of each
  /// registry over what it has open).
  void release_shards(const std::vector<uint32_t>& shards);
  void hand_over(const std::vector<uint32_t>& shards); /// to their placed owners (`place` first)
  /// Starts, keeps, stops the consumers by their leases (`renewed`: the
  /// leases this node still holds).
  void keep_consumers(const std::vector<std::string>& live, bool may_move);
  /// Stops a consumer running here and releases its lease.
  void stop_consumer(const std::string& name, const char* why, bool release = true);
  void wake_keeper();

  context ctx_;
  std::shared_ptr<persistence::postgres_coordination> coordination_;
  std::string owner_; ///< node#incarnation, the leases' owner (the keeper's)
  int64_t incarnation_ = 0; ///< the incarnation served as (the keeper's)
  std::shared_ptr<shard_table> fence_;
  shard_table& table_;
  sourcery::detail::local_registration local_;
  std::unique_ptr<membership> membership_;
  caf::actor link_;
  uint16_t port_ = 0;
  cluster_counters counters_;
  uint64_t frames_refused_logged_ = 0; ///< by the keeper's thread
  std::atomic<bool> leaving_{false};
  std::atomic<bool> down_{false};
  std::mutex serving_mtx_; ///< orders going down and serving again (and their callbacks)
  std::atomic<bool> joined_{false};
  /// Peers' messages to verify that came while this node was joining: they
  /// are verified once it has joined (a fresh reading of the members), not
  /// refused for a view it did not have yet.
  std::mutex joining_mtx_;
  std::vector<std::function<void()>> verify_after_join_;
  struct consumer {
    std::function<caf::error()> start;
    std::function<void()> stop;
    bool running = false;
    std::string tenant; ///< whose consumer it is ("": this application's)
  };
  mutable std::mutex consumers_mtx_; // the map; start and stop run outside it
  std::map<std::string, consumer> consumers_;
  /// Held while the keeper starts or stops consumers, and while a tenant's
  /// are removed: a tenant detached never has one started after.
  std::mutex consumers_turn_;

  mutable std::shared_mutex tenants_mtx_;
  struct tenant_entry {
    sourcery::detail::local_registration* local;
    std::atomic<int64_t>* busy; ///< steady ticks of its last command from a peer
  };
  std::map<std::string, tenant_entry, std::less<>> tenants_;
  std::function<void(const std::string&)> open_tenant_; ///< under tenants_mtx_
  /// Runs `f(local)` with the registration that runs commands of `tenant`
  /// here ("": this application's), or `f(nullptr)` if it is not open here;
  /// `for_peer`: a peer's command, which marks the tenant busy.
  template <class F>
  void with_tenant(const std::string& tenant, bool for_peer, F&& f);
  /// Stops the aggregates `selects` picks, in this application and every tenant's.
  void release_everywhere(const std::function<bool(const std::string&)>& selects);
  /// Asks for tenant `name` to be opened here (a peer needs it).
  void want_tenant(const std::string& name);
  mutable std::mutex placement_mtx_;
  std::vector<std::string> placement_; ///< owner by shard

  std::chrono::steady_clock::time_point last_lease_renewal_{}; ///< the membership thread's

  // -- reachability: pings over the links, votes in the store ------------------
  struct reach {
    std::chrono::steady_clock::time_point first_ping{}; ///< of the current silence
    std::chrono::steady_clock::time_point last_pong{};
    int64_t incarnation = 0; ///< the peer's, as last read: a new one's silence counts anew
  };
  std::mutex reach_mtx_;
  std::map<std::string, reach> reach_;
  std::set<std::string> voted_;           ///< peers this node voted unreachable (the keeper's)
  std::vector<std::string> last_peers_;   ///< the other members when last serving (the keeper's)
  std::atomic<bool> isolated_{false};     ///< cannot reach a majority of the others
  /// Pings `peers` and votes on those silent past `unreachable_after`;
  /// returns how many of `peers` are unreachable.
  size_t check_reachability(const std::vector<std::string>& peers);
  void pinged(const std::string& node, bool answered);

  std::mutex keeper_mtx_;
  std::condition_variable keeper_cv_;
  bool keeper_woken_ = false;
  bool keeper_stop_ = false;
  std::thread keeper_;
};

} // namespace sourcery::cluster::detail
