#pragma once

// Operators' requests to a running application about its handlers, and what
// it records for them, as checkpoints of the event store: the one store an
// application's processes and the operator's tool share. The tool writes a
// request; the application (its handler-control pass, every second) acts on
// it where the handler runs and clears it.
//
//   control.reset:NAME    position + 1: move NAME's checkpoint there
//   control.skip:NAME     1: NAME stopped on an event: park it, go on after it
//   control.retry:NAME    1: NAME stopped on an event: handle it again
//   control.replay:NAME   position + 1: handle that parked event again, alone
//   status.stopped:NAME   position + 1 of the event NAME stopped on (0: it runs)
//   status.parked:NAME:P  P: an event NAME skipped, to be looked at later
//                         (0 once handled again: no longer parked)
//
// 0 means "none" (checkpoints cannot be deleted, only set). `stats` leaves
// these out of its list of subscriptions.


#include <cstdint>
#include <string>
#include <string_view>

#include <caf/error.hpp>

#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/projection_store.hpp"

namespace sourcery::detail::control {

/// Whether checkpoint `name` is one of these records.
inline bool is_record(std::string_view name) {
  return name.rfind("control.", 0) == 0 || name.rfind("status.", 0) == 0;
}

inline std::string reset_key(std::string_view name) {
  return "control.reset:" + std::string{name};
}
inline std::string skip_key(std::string_view name) {
  return "control.skip:" + std::string{name};
}
inline std::string retry_key(std::string_view name) {
  return "control.retry:" + std::string{name};
}
inline std::string replay_key(std::string_view name) {
  return "control.replay:" + std::string{name};
}
inline std::string stopped_key(std::string_view name) {
  return "status.stopped:" + std::string{name};
}
inline std::string parked_key(std::string_view name, uint64_t position) {
  return "status.parked:" + std::string{name} + ":" + std::to_string(position);
}
inline constexpr std::string_view parked_prefix = "status.parked:";
inline constexpr std::string_view stopped_prefix = "status.stopped:";

/// Moves the checkpoint of handler `name` of `kind` ("handler",
/// "projection", "process manager") to `position`, backwards too: an event
/// handler's is in the event store; a projection's or process manager's in
/// the read models, whose rows (its instances' states) stay. Only while it
/// does not run. Errors: the stores'; invalid_argument without read models.
inline caf::error move_checkpoint(persistence::event_store& store, persistence::projection_store* models,
                                  const std::string& kind, const std::string& name, uint64_t position) {
  if (kind == "handler") {
    auto r = store.save_checkpoint("handler:" + name, position);
    return r ? caf::error{} : r.error();
  }
  if (models == nullptr)
    return persistence::make_error(persistence::store_errc::invalid_argument, "no read models hold " + name);
  auto saved_as = kind == "process manager" ? "process:" + name : name;
  auto rows = models->dump(saved_as);
  if (!rows)
    return rows.error();
  return models->replace(saved_as, {}, [&](persistence::projection_store::batches& out) {
    return out.write(position, [&](persistence::projection_store::writer& w) {
      for (auto& [table, key, value] : *rows)
        w.put(table, key, value);
      return caf::error{};
    });
  });
}

} // namespace sourcery::detail::control
