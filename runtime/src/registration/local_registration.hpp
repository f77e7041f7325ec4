#pragma once

// The local registration's class, for the cluster's registration, which
// hosts the aggregates of the shards this node serves through it (and its
// consumers while it holds their leases).

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/actor.hpp>

#include "sourcery/runtime/registration/registration.hpp"

namespace sourcery::detail {

/// The current actors of an aggregate type's subtree; restarts replace them.
struct aggregate_slots {
  std::mutex mtx;
  caf::actor aggregates; // the simple_one_for_one supervisor
  caf::actor registry;
};

class local_registration final : public registration {
public:
  local_registration(caf::actor_system& system, supervision::supervisor& root,
                     std::function<void(const supervision::supervisor_report&)> observer);

  caf::error host(const detail::aggregate_host& host) override;
  caf::error start() override { return {}; }
  void stop() override {}
  void route(command_envelope cmd, reply done) override;
  /// Starts the consumer at once (`stop` is never called: it runs until the
  /// tree stops).
  caf::error run_once(const std::string& name, std::function<caf::error()> start,
                      std::function<void()> stop) override;
  bool runs_here(const std::string&) const override { return true; }
  std::shared_ptr<const persistence::append_fence> fence() const override { return nullptr; }
  caf::error outage() const override { return {}; }
  void render_metrics(std::string&) const override {}
  registration_description describe() const override { return {}; }

  /// Stops the actors of `streams` of aggregate type `type` after their
  /// queued commands (their shard moved to another node).
  /// Stops, in every aggregate type, the actors of the open streams
  /// `selects` picks (called on each registry's thread).
  void release_matching(std::function<bool(const std::string& stream)> selects);

private:
  caf::actor registry_of(const std::string& type) const;

  caf::actor_system& system_;
  supervision::supervisor& root_;
  std::function<void(const supervision::supervisor_report&)> observer_;
  // Written only while the application starts, read-only afterwards.
  std::map<std::string, std::shared_ptr<aggregate_slots>, std::less<>> types_;
};

} // namespace sourcery::detail
