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
//   status.stopped:NAME   position + 1 of the event NAME stopped on (0: it runs)
//   status.parked:NAME:P  P: an event NAME skipped, to be looked at later
//
// 0 means "none" (checkpoints cannot be deleted, only set). `stats` leaves
// these out of its list of subscriptions.


#include <cstdint>
#include <string>
#include <string_view>

#include <caf/error.hpp>

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
inline std::string stopped_key(std::string_view name) {
  return "status.stopped:" + std::string{name};
}
inline std::string parked_key(std::string_view name, uint64_t position) {
  return "status.parked:" + std::string{name} + ":" + std::to_string(position);
}
inline constexpr std::string_view parked_prefix = "status.parked:";
inline constexpr std::string_view stopped_prefix = "status.stopped:";

/// Moves the checkpoint of read model `name` (a process manager's) to
/// `position`, backwards too, keeping its rows (its instances' states).
inline caf::error move_read_model_checkpoint(persistence::projection_store& models, const std::string& name,
                                             uint64_t position) {
  auto rows = models.dump(name);
  if (!rows)
    return rows.error();
  return models.replace(name, {}, [&](persistence::projection_store::batches& out) {
    return out.write(position, [&](persistence::projection_store::writer& w) {
      for (auto& [table, key, value] : *rows)
        w.put(table, key, value);
      return caf::error{};
    });
  });
}

} // namespace sourcery::detail::control
