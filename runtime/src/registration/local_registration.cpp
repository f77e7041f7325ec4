#include "local_registration.hpp"

#include <map>
#include <mutex>
#include <string>

#include <caf/all.hpp>

#include "sourcery/actors/aggregates/detail/aggregate_host.hpp"
#include "sourcery/actors/aggregates/detail/aggregate_registry.hpp"
#include "sourcery/actors/aggregates/detail/command_delivery.hpp"

namespace sourcery {

registration::~registration() = default;

std::shared_ptr<const registration_provider> registration::tenant_provider(const std::string&) {
  return nullptr;
}

void registration::open_tenants_with(std::function<void(const std::string&)>) {}

std::chrono::steady_clock::time_point registration::last_busy() const {
  return {};
}
registration_provider::~registration_provider() = default;
void registration_provider::configure(caf::actor_system_config&) const {}

namespace detail {

local_registration::local_registration(caf::actor_system& system, supervision::supervisor& root,
                                       std::function<void(const supervision::supervisor_report&)> observer)
  : system_(system), root_(root), observer_(std::move(observer)) {}

caf::error local_registration::host(const detail::aggregate_host& host) {
  if (types_.count(host.name()) != 0)
    return {};
  auto slots = std::make_shared<aggregate_slots>();
  supervision::supervisor_flags dyn;
  dyn.name = "aggregates";
  dyn.how = supervision::strategy::simple_one_for_one;
  dyn.intensity = 1'000'000; // temporary children: nothing is restarted
  dyn.observer = observer_;
  supervision::child_spec aggregates;
  aggregates.id = "aggregates";
  aggregates.type = supervision::child_type::supervisor;
  aggregates.start = [slots, dyn, tmpl = host.actor_template()](caf::actor_system& sys,
                                                               const caf::message&) -> caf::expected<caf::actor> {
    auto sup = supervision::spawn_supervisor(sys, dyn, {tmpl});
    std::lock_guard guard{slots->mtx};
    slots->aggregates = sup;
    return sup;
  };
  supervision::child_spec registry;
  registry.id = "registry";
  registry.start = [slots](caf::actor_system& sys, const caf::message&) -> caf::expected<caf::actor> {
    std::lock_guard guard{slots->mtx};
    slots->registry = detail::spawn_aggregate_registry(sys, slots->aggregates);
    return slots->registry;
  };
  supervision::supervisor_flags subtree;
  subtree.name = "aggregate:" + host.name();
  subtree.how = supervision::strategy::one_for_all;
  subtree.intensity = 5;
  subtree.period = std::chrono::seconds{10};
  subtree.observer = observer_;
  supervision::child_spec sub;
  sub.id = subtree.name;
  sub.type = supervision::child_type::supervisor;
  sub.start = supervision::supervisor_start(subtree, {aggregates, registry});
  auto started = root_.start_child(sub);
  if (!started)
    return started.error();
  // The subtree starts its children when it first runs; its first answer
  // comes after that, so the registry is in its slot once this returns.
  if (auto kids = supervision::supervisor{system_, *started}.which_children(); !kids)
    return kids.error();
  types_.emplace(host.name(), std::move(slots));
  return {};
}

void local_registration::route(command_envelope cmd, reply done) {
  auto registry = registry_of(cmd.aggregate_type);
  if (!registry)
    return done(make_error(dispatch_errc::unregistered_command,
                           "no aggregate type " + cmd.aggregate_type + " is hosted here"));
  caf::anon_send(registry, detail::dispatch_atom::value,
                 detail::command_delivery{std::move(cmd), std::make_shared<detail::reply_slot>(std::move(done))});
}

caf::error local_registration::run_once(const std::string&, std::function<caf::error()> start,
                                        std::function<void()>) {
  return start();
}

caf::actor local_registration::registry_of(const std::string& type) const {
  auto i = types_.find(type);
  if (i == types_.end())
    return {};
  std::lock_guard guard{i->second->mtx};
  return i->second->registry;
}

void local_registration::release_matching(std::function<bool(const std::string& stream)> selects) {
  std::vector<caf::actor> registries;
  for (auto& [type, slots] : types_) {
    std::lock_guard guard{slots->mtx};
    if (slots->registry)
      registries.push_back(slots->registry);
  }
  for (auto& registry : registries)
    caf::anon_send(registry, release_atom::value, stream_filter{selects});
}

} // namespace detail

std::unique_ptr<registration>
make_local_registration(caf::actor_system& system, supervision::supervisor& root,
                        std::function<void(const supervision::supervisor_report&)> observer) {
  return std::make_unique<detail::local_registration>(system, root, std::move(observer));
}

namespace {

class local_provider final : public registration_provider {
public:
  caf::expected<std::unique_ptr<registration>> create(registration_context ctx) const override {
    return make_local_registration(ctx.system, ctx.root, std::move(ctx.observer));
  }
};

} // namespace

std::shared_ptr<const registration_provider> local_registration_provider() {
  static const auto provider = std::make_shared<const local_provider>();
  return provider;
}

} // namespace sourcery
