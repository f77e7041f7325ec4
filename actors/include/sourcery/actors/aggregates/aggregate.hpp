#pragma once

// Writing an aggregate: plain C++, no base class.
//
//     struct deposit { std::string account; int64_t amount = 0; SOURCERY_FIELDS(account, amount) };
//     struct deposited { int64_t amount = 0; SOURCERY_EVENT("bank.deposited", amount) };
//
//     struct account {
//       using event = std::variant<opened, deposited, withdrawn>;
//       bool open = false;
//       int64_t balance = 0;
//
//       sourcery::outcome<event> execute(const deposit& c) const {
//         if (!open) return sourcery::reject("account_closed");
//         return deposited{c.amount};
//       }
//       void apply(const deposited& e) { balance += e.amount; }
//       ...
//     };
//
// An event type names itself with `type_name` and may give a
// `schema_version` (default 1) and a `static void upcast(nlohmann::json&,
// uint32_t from_version)` that upgrades data stored by older versions. An
// aggregate lists its events in `event`, has one `execute` per command (or
// the router supplies a command handler)
// and one `apply` per event. For snapshots it adds MSGPACK_DEFINE_MAP over
// its state and a `snapshot_version`.

#include <chrono>
#include <concepts>
#include <optional>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/event_registry.hpp"

/// The msgpack map of a command's or event's fields (none is fine): what
/// makes it data that can be stored and sent to another node.
///
///     struct deposit { std::string account; int64_t amount = 0; SOURCERY_FIELDS(account, amount) };
#define SOURCERY_FIELDS(...) SOURCERY_FIELDS_SELECT(__VA_OPT__(LIST))(__VA_ARGS__)
#define SOURCERY_FIELDS_SELECT(x) SOURCERY_FIELDS_SELECT_I(x)
#define SOURCERY_FIELDS_SELECT_I(x) SOURCERY_FIELDS_##x
#define SOURCERY_FIELDS_LIST(...) MSGPACK_DEFINE_MAP(__VA_ARGS__)
#define SOURCERY_FIELDS_(...) SOURCERY_DEFINE_EMPTY_MAP()

/// An event type in one line: its stored type name and its fields.
///
///     struct deposited { int64_t amount = 0; SOURCERY_EVENT("bank.deposited", amount) };
#define SOURCERY_EVENT(name, ...)                                                                                  \
  static constexpr const char* type_name = name;                                                                   \
  SOURCERY_FIELDS(__VA_ARGS__)

namespace sourcery {

/// A command the domain refuses: a value, never a crash.
struct rejection {
  std::string reason;  ///< machine-readable, e.g. "insufficient_funds"
  std::string message; ///< for humans

  friend bool operator==(const rejection&, const rejection&) = default;
};

inline rejection reject(std::string reason, std::string message = {}) {
  return {std::move(reason), std::move(message)};
}

/// `return sourcery::no_events;` from an execute that accepts without change.
struct no_events_t {};
inline constexpr no_events_t no_events{};

/// What `execute` returns: the events a command produced, or a rejection.
template <class Event>
class outcome {
public:
  outcome(rejection r) : rejected_(true), rejection_(std::move(r)) {}
  outcome(no_events_t) {}
  template <class E>
    requires(!std::is_same_v<std::decay_t<E>, outcome> && std::is_constructible_v<Event, E &&>
             && !std::is_same_v<std::decay_t<E>, rejection>)
  outcome(E&& e) {
    events_.emplace_back(std::forward<E>(e));
  }
  outcome(std::initializer_list<Event> events) : events_(events) {}
  outcome(std::vector<Event> events) : events_(std::move(events)) {}

  bool rejected() const noexcept { return rejected_; }
  const rejection& why() const noexcept { return rejection_; }
  const std::vector<Event>& events() const noexcept { return events_; }
  std::vector<Event>& events() noexcept { return events_; }

private:
  bool rejected_ = false;
  rejection rejection_;
  std::vector<Event> events_;
};

/// How long an aggregate's actor stays alive once idle, chosen after each
/// command (Commanded's AggregateLifespan). An aggregate may define
/// `sourcery::lifespan after_event(const E&) const` for its events and
/// `sourcery::lifespan after_command(const C&) const` for its commands: after
/// an accepted command the last event decides, otherwise the command, and
/// without either the aggregate type's default applies.
struct lifespan {
  enum class kind : uint8_t { timeout, infinite, stop };
  kind how = kind::infinite;
  std::chrono::milliseconds time{0};

  static lifespan timeout(std::chrono::milliseconds t) { return {kind::timeout, t}; }
  static lifespan infinite() { return {kind::infinite, std::chrono::milliseconds{0}}; }
  /// Passivate as soon as the command is answered.
  static lifespan stop() { return {kind::stop, std::chrono::milliseconds{0}}; }
};

// -- concepts ---------------------------------------------------------------------

/// An event type: named, msgpack-encodable as a map.
template <class E>
concept event_type = requires {
  { E::type_name } -> std::convertible_to<const char*>;
};

template <class A>
concept aggregate = requires { typename A::event; } && std::default_initializable<A>;

/// Whether aggregate `A` executes command `C` itself.
template <class A, class C>
concept executes = requires(const A& a, const C& c) {
  { a.execute(c) } -> std::convertible_to<outcome<typename A::event>>;
};

/// Whether `A` can be snapshotted (its state has a msgpack map layout and a
/// `snapshot_version`).
template <class A>
concept snapshottable = requires {
  { A::snapshot_version } -> std::convertible_to<uint32_t>;
};

template <class E>
constexpr uint32_t schema_version_of() {
  if constexpr (requires { E::schema_version; })
    return E::schema_version;
  else
    return 1;
}

// -- events of an aggregate ---------------------------------------------------------

namespace detail {

template <class Variant>
struct variant_events;

template <class... Es>
struct variant_events<std::variant<Es...>> {
  static caf::error register_all(persistence::event_registry& registry) {
    caf::error err;
    ((err = err ? err : add_one<Es>(registry)), ...);
    return err;
  }

  template <class E>
  static caf::error add_one(persistence::event_registry& registry) {
    static_assert(event_type<E>, "an event type needs `static constexpr const char* type_name`");
    // The same type may serve several aggregates: registering it twice is fine.
    if (auto known = registry.name_of<E>(); known != nullptr && *known == E::type_name)
      return {};
    if (auto err = registry.add<E>(E::type_name, schema_version_of<E>()))
      return err;
    // An event type at schema version N > 1 may upgrade older data with
    // `static void upcast(nlohmann::json& data, uint32_t from_version)`;
    // reads then hand every consumer the current shape.
    if constexpr (requires(nlohmann::json& d) { E::upcast(d, uint32_t{}); }) {
      for (uint32_t v = 1; v < schema_version_of<E>(); ++v)
        if (auto err = registry.add_upcaster(E::type_name, v, [v](nlohmann::json& d) { E::upcast(d, v); }))
          return err;
    }
    return {};
  }

  static caf::expected<std::variant<Es...>> decode(const persistence::event_registry& registry,
                                                   const persistence::recorded_event& ev) {
    caf::expected<std::variant<Es...>> result = caf::error{};
    if (!(try_one<Es>(registry, ev, result) || ...))
      result = persistence::make_error(persistence::store_errc::unknown_event_type,
                                       "event " + std::to_string(ev.position) + " of '" + ev.stream_id + "' is a "
                                         + ev.type + ", which this aggregate does not apply");
    return result;
  }

  template <class E>
  static bool try_one(const persistence::event_registry& registry, const persistence::recorded_event& ev,
                      caf::expected<std::variant<Es...>>& result) {
    if (ev.type != E::type_name)
      return false;
    auto decoded = registry.unpack<E>(ev);
    if (decoded)
      result = std::variant<Es...>{std::move(*decoded)};
    else
      result = decoded.error();
    return true;
  }
};

} // namespace detail

/// Registers every event type of aggregate `A` under its `type_name`.
template <aggregate A>
caf::error register_events(persistence::event_registry& registry) {
  return detail::variant_events<typename A::event>::register_all(registry);
}

/// Decodes a stored event into `A::event`. Errors: unknown_event_type for a
/// type `A` does not list, malformed_payload.
template <aggregate A>
caf::expected<typename A::event> decode_event(const persistence::event_registry& registry,
                                              const persistence::recorded_event& ev) {
  return detail::variant_events<typename A::event>::decode(registry, ev);
}

/// Encodes one of `A`'s events for appending.
template <aggregate A>
caf::expected<persistence::event_data> encode_event(const persistence::event_registry& registry,
                                                    const typename A::event& ev) {
  return std::visit([&](const auto& e) { return registry.encode(e); }, ev);
}

/// Folds one event into the state.
template <aggregate A>
void apply_event(A& state, const typename A::event& ev) {
  std::visit([&](const auto& e) { state.apply(e); }, ev);
}

/// The lifespan `A` chooses after event `ev`, if it defines `after_event` for it.
template <aggregate A>
std::optional<lifespan> lifespan_after_event(const A& state, const typename A::event& ev) {
  return std::visit(
    [&](const auto& e) -> std::optional<lifespan> {
      if constexpr (requires { { state.after_event(e) } -> std::convertible_to<lifespan>; })
        return state.after_event(e);
      else
        return std::nullopt;
    },
    ev);
}

/// The type name of an event held in `A::event`.
template <aggregate A>
const char* type_name_of(const typename A::event& ev) {
  return std::visit([](const auto& e) -> const char* { return std::decay_t<decltype(e)>::type_name; }, ev);
}

} // namespace sourcery
