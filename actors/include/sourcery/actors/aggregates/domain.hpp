#pragma once

// The domain API, and nothing else: what a header of commands, events and
// aggregates needs (fields, rejections, outcomes, the concepts). It
// compiles without msgpack, CAF or the actor stack; aggregate.hpp adds what
// the runtime does with them.
//
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
// the router supplies a command handler) and one `apply` per event. For
// snapshots it adds SOURCERY_FIELDS over its state and a `snapshot_version`.

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "sourcery/persistence/fields.hpp"

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

} // namespace sourcery
