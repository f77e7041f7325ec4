#pragma once

// This node's membership of a cluster, kept in the store's membership
// table: it joins as a new incarnation, renews on a thread of its own,
// declares down the members that stopped renewing, and keeps the view of
// the live members. A node that finds itself declared down -- or that has
// not renewed for `down_after`, so the others may have declared it down --
// stops serving at once (`serving()` false, `on_down` called): being
// declared down is then true, and no two nodes serve as one. It then tries
// to join again, every renewal period, as a new incarnation (a store
// frozen, restarting or failing over; a node paused): once the store
// takes it, it serves again (`on_rejoined`). Being declared down means
// "stop serving and re-join", never "exit". Only a node replaced by a
// newer incarnation of itself (the same address started again elsewhere)
// stops for good (`replaced()`).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "sourcery/persistence/postgres_coordination.hpp"

namespace sourcery::cluster {

struct membership_options {
  std::string cluster;
  std::string node; ///< how peers reach this node, "host:port"
  std::chrono::milliseconds renew_every{500};
  /// A member that has not renewed for this long is declared down, and this
  /// node stops serving when its own renewals have failed for this long.
  /// After this node's own renewals were held back for half of it or more
  /// (a store frozen or failing over), the others' silence is excused by as
  /// long, for `down_after` from its first renewal that went through: the
  /// same outage held theirs back, and the first node through would
  /// otherwise declare every other one down. A member killed meanwhile is
  /// found by the keeper's probe (its address refuses) without waiting.
  std::chrono::milliseconds down_after{3000};
  /// Called on the membership's thread when the live members change.
  std::function<void(const std::vector<std::string>& live)> on_view;
  /// Called on the membership's thread with the members this node has just
  /// declared down.
  std::function<void(const std::vector<std::string>& nodes)> on_declared_down;
  /// While down: whether this node may join again now (it can reach the
  /// others); unset: always.
  std::function<bool()> may_join;
  /// While down, it does not join while a majority of the others voted it
  /// unreachable within this window (see postgres_coordination::shunned).
  std::chrono::milliseconds vote_window{3000};
  /// Called on the membership's thread after each renewal that went
  /// through (the leases are renewed there, where nothing slow runs).
  std::function<void()> on_renewed;
  /// Called when this node must stop serving (each time it does), on the
  /// membership's thread -- or within `start`, before it returns, if the
  /// first round already fails: the callback must not reach for the
  /// membership object, which its owner may not hold yet. `replaced`: a
  /// newer incarnation of this node took over, and it will not join again.
  std::function<void(const caf::error& why, bool replaced)> on_down;
  /// Called on the membership's thread when this node joined again, as
  /// incarnation `incarnation`, after `on_down`.
  std::function<void(int64_t incarnation)> on_rejoined;
};

class membership {
public:
  /// Joins (a new incarnation) and starts renewing. Errors: the store's.
  static caf::expected<std::unique_ptr<membership>>
  start(std::shared_ptr<persistence::postgres_coordination> store, membership_options options);
  /// Stops renewing (without leaving: see `leave`).
  ~membership();

  /// The incarnation this node serves as (a greater one after each re-join).
  int64_t incarnation() const noexcept { return incarnation_.load(); }
  /// False while this node is down (found itself declared down, or could
  /// not renew in time) and has not joined again -- and from the moment its
  /// last renewal is `down_after` old, before the membership's thread has
  /// run: a process thawed after a pause refuses at once instead of
  /// serving from a membership its peers may have ended meanwhile.
  bool serving() const noexcept {
    return serving_.load()
           && std::chrono::steady_clock::now().time_since_epoch().count() - last_renewal_.load()
                < std::chrono::duration_cast<std::chrono::steady_clock::duration>(options_.down_after).count();
  }
  /// True once another process joined as this node (a newer incarnation
  /// at the same address): this one stopped serving for good.
  bool replaced() const noexcept { return replaced_.load(); }
  /// The live members as last read (this node included while it serves).
  std::vector<std::string> live() const;
  /// Whether `node` is an up member as incarnation `incarnation`, as last
  /// read: who may send this node commands and nudges.
  bool is_up(const std::string& node, int64_t incarnation) const;
  /// `node`'s incarnation as last read, or 0 when it is not an up member.
  int64_t incarnation_of(const std::string& node) const;
  /// Live members that missed two renewals or more: perhaps going down.
  /// Shards are not rebalanced while anyone is suspected.
  std::vector<std::string> suspected() const;
  /// Renews and reads the members now instead of at the next period (a
  /// peer said the membership changed); then calls `then`, on the
  /// membership's thread, once a round has read the members (a round that
  /// could not -- a statement timed out -- leaves it to the next; while
  /// this node is down, at once).
  void wake(std::function<void()> then = {});
  /// Leaves cleanly: marks this incarnation left and stops renewing.
  caf::error leave();

  /// Test seam: renewals fail as if the store were out of reach (a node cut
  /// off), or go through again.
  void pause_renewals(bool paused);

private:
  membership(std::shared_ptr<persistence::postgres_coordination> store, membership_options options, int64_t incarnation);
  void run();
  /// One round while serving; true if it read the members.
  bool step();
  void stop_serving(const caf::error& why);
  /// While down: joins again as a new incarnation if the store takes it.
  void rejoin();
  /// Reads the members and updates the view; false if it could not.
  bool read_view();
  /// This node's own renewal went through at `at` after `gap` without one.
  void renewed_after(std::chrono::steady_clock::duration gap, std::chrono::steady_clock::time_point at);
  /// How long a member may stay silent before this node declares it down.
  std::chrono::milliseconds silence_allowed(std::chrono::steady_clock::time_point now) const;

  std::shared_ptr<persistence::postgres_coordination> store_;
  membership_options options_;
  std::atomic<int64_t> incarnation_{0};
  std::atomic<bool> serving_{true};
  std::atomic<bool> paused_{false};
  std::atomic<bool> replaced_{false};
  /// When the last renewal that succeeded was asked for (steady clock ticks).
  std::atomic<std::chrono::steady_clock::rep> last_renewal_;
  /// What kept this node's own renewals back lately (a store frozen,
  /// restarting or slow; a starved machine) may have kept the others' back
  /// as much: their silence is excused by `excuse_` more, until
  /// `excuse_until_`. The membership's thread alone uses them.
  std::chrono::steady_clock::duration excuse_{0};
  std::chrono::steady_clock::time_point excuse_until_{};
  mutable std::mutex mtx_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool woken_ = false;
  std::vector<std::string> live_;
  std::map<std::string, int64_t> up_; ///< the up members' incarnations
  std::vector<std::function<void()>> after_round_; ///< `wake`'s, for the next round
  std::vector<std::string> suspected_;
  std::thread thread_;
};

} // namespace sourcery::cluster
