#pragma once

// What the runtime does with an aggregate written against domain.hpp:
// registering, decoding and encoding its events, folding them, the lifespan
// it chooses. (A domain header includes domain.hpp alone.)

#include <optional>
#include <string>
#include <variant>

#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "sourcery/actors/aggregates/domain.hpp"
#include "sourcery/actors/aggregates/lifespan.hpp"
#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/event_registry.hpp"

namespace sourcery {

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
