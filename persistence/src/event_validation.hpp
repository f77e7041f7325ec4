#pragma once

// The checks every event passes before a store takes it: by `append` and by
// `lmdb_store::import_events` alike.

#include <string_view>

#include <caf/error.hpp>

#include "sourcery/persistence/event.hpp"

namespace sourcery::persistence::detail {

/// Type name 1 to 255 bytes, data and metadata msgpack maps (or empty).
/// `what` names the event in the error. Errors: invalid_argument, malformed_payload.
caf::error validate_event(const event_data& ev, const std::string& what);

} // namespace sourcery::persistence::detail
