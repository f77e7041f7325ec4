#pragma once

// One aggregate type as the runtime hosts it: its settings, its repository,
// and its command table, keyed by command type name, that decodes an
// envelope's payload and calls the aggregate's `execute`. Built from a
// router's declaration when the application starts; the local registration
// spawns the type's actors through `actor_template`.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include <caf/expected.hpp>
#include <msgpack.hpp>

#include "sourcery/actors/aggregates/aggregate.hpp"
#include "sourcery/actors/aggregates/aggregate_repository.hpp"
#include "sourcery/actors/aggregates/aggregate_settings.hpp"
#include "sourcery/actors/aggregates/command_envelope.hpp"
#include "sourcery/actors/aggregates/command_result.hpp"
#include "sourcery/persistence/map_fields.hpp"
#include "sourcery/supervision/child_spec.hpp"

namespace sourcery {

/// A command's msgpack map, as an envelope carries it.
template <class C>
persistence::bytes encode_command(const C& cmd) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, cmd);
  return persistence::bytes(buf.data(), buf.data() + buf.size());
}

/// Decodes an envelope's payload as `C`. Errors: malformed_command.
template <class C>
caf::expected<C> decode_command(const persistence::bytes& payload, const std::string& name) {
  try {
    auto oh = msgpack::unpack(reinterpret_cast<const char*>(payload.data()), payload.size());
    C out{};
    persistence::convert_map(oh.get(), out);
    return out;
  } catch (const std::exception& e) {
    return make_error(dispatch_errc::malformed_command, "the payload of " + name + " does not decode: " + e.what());
  }
}

namespace detail {

class aggregate_host {
public:
  aggregate_host(std::string name, aggregate_settings settings)
    : name_(std::move(name)), settings_(std::move(settings)) {}
  virtual ~aggregate_host() = default;
  aggregate_host(const aggregate_host&) = delete;
  aggregate_host& operator=(const aggregate_host&) = delete;

  const std::string& name() const noexcept { return name_; }
  const aggregate_settings& settings() const noexcept { return settings_; }
  /// The child template of the type's simple_one_for_one supervisor:
  /// started with (stream id, registry).
  virtual supervision::child_spec actor_template() const = 0;

private:
  std::string name_;
  aggregate_settings settings_;
};

template <aggregate A>
class aggregate_host_of final : public aggregate_host {
public:
  /// What a command decided, and the lifespan its `after_command` chose.
  struct decided {
    outcome<typename A::event> result;
    std::optional<lifespan> after_command;
  };
  /// Decodes the payload (errors: malformed_command) and decides. The
  /// domain's exceptions propagate: the actor crashes on them.
  using executor = std::function<caf::expected<decided>(const A&, const command_envelope&)>;

  aggregate_host_of(std::string name, aggregate_settings settings, persistence::event_store& store,
                    const persistence::event_registry& types)
    : aggregate_host(std::move(name), settings),
      repo_(store, types, aggregate_options{settings.snapshot_every, settings.max_retries}) {}

  void add(std::string command, executor e) { commands_.insert_or_assign(std::move(command), std::move(e)); }
  const executor* find(const std::string& command) const {
    auto i = commands_.find(command);
    return i == commands_.end() ? nullptr : &i->second;
  }
  const aggregate_repository<A>& repo() const noexcept { return repo_; }

  supervision::child_spec actor_template() const override;

private:
  aggregate_repository<A> repo_;
  std::unordered_map<std::string, executor> commands_;
};

/// The executor of command `C` on `A` through `decide(const A&, const C&)`.
template <aggregate A, class C, class Decide>
typename aggregate_host_of<A>::executor executor_for(std::string name, Decide decide) {
  return [name = std::move(name), decide = std::move(decide)](
           const A& state, const command_envelope& env) -> caf::expected<typename aggregate_host_of<A>::decided> {
    auto cmd = decode_command<C>(env.payload, name);
    if (!cmd)
      return cmd.error();
    typename aggregate_host_of<A>::decided out{decide(state, *cmd), std::nullopt};
    if constexpr (requires { { state.after_command(*cmd) } -> std::convertible_to<lifespan>; })
      out.after_command = state.after_command(*cmd);
    return out;
  };
}

} // namespace detail
} // namespace sourcery

#include "sourcery/actors/aggregates/detail/aggregate_actor.hpp"
