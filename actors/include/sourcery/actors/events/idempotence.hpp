#pragma once

// Helpers for handlers under at-least-once delivery. After a crash, the
// events since a handler's last checkpoint come again; an effect must then
// not happen twice. Three ways, from the strongest:
//
// - a projector (projector.hpp) commits its read-model rows and its
//   checkpoint in one transaction: exactly-once in effect, nothing to do;
// - `effect_log::once` does the same for a handler's own writes into the
//   read-model store: the effect and the mark of its event commit together,
//   and an event marked before is passed over;
// - for effects outside (an e-mail, a payment API), `idempotency_key` is the
//   same at every redelivery: hand it to a system that deduplicates.

#include <functional>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "sourcery/actors/events/event_consumer.hpp"
#include "sourcery/persistence/projection_store.hpp"

namespace sourcery {

/// The same string each time `ctx`'s event is delivered (its event id).
inline std::string idempotency_key(const event_context& ctx) {
  return ctx.event_id.to_string();
}

/// Effects into the read-model store, each applied once per event.
class effect_log {
public:
  using writer = persistence::projection_store::writer;

  /// Marks live in `store` under projection `name` (one log per handler).
  effect_log(persistence::projection_store& store, std::string name) : store_(store), name_(std::move(name)) {}

  /// Runs `effect` and records `ctx` as applied for `key` (default: its
  /// stream), in one durable transaction, unless an event at or after
  /// `ctx.position` was recorded for that key before. Events of one key must
  /// come in order (they do: partitions keep order within a key). Returns
  /// whether the effect ran. Errors: the effect's, the store's.
  caf::expected<bool> once(const event_context& ctx, const std::function<caf::error(writer&)>& effect,
                           std::string_view key = {}) {
    if (key.empty())
      key = ctx.stream_id;
    bool ran = false;
    auto err = store_.update(name_, [&](writer& w) -> caf::error {
      ran = false; // the transaction may run again (a growing map)
      if (auto mark = w.get(marks, key); mark && std::stoull(*mark) >= ctx.position)
        return {};
      if (auto e = effect(w))
        return e;
      w.put(marks, key, std::to_string(ctx.position));
      ran = true;
      return {};
    });
    if (err)
      return err;
    return ran;
  }

  /// The last position applied for `key` (0: none).
  caf::expected<uint64_t> applied(std::string_view key) const {
    auto mark = store_.get(name_, marks, key);
    if (!mark)
      return mark.error();
    return *mark ? std::stoull(**mark) : 0;
  }

private:
  static constexpr const char* marks = "$applied";
  persistence::projection_store& store_;
  std::string name_;
};

} // namespace sourcery
