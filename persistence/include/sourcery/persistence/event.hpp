#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sourcery/persistence/uuid.hpp"

namespace sourcery {
class metadata;
}

namespace sourcery::persistence {

/// Raw bytes: msgpack documents, snapshot states.
using bytes = std::vector<uint8_t>;

/// An event to append. `data` and `metadata` must be msgpack maps (empty
/// bytes stand for an empty map). A nil `event_id` is replaced by a fresh
/// random one when the append is accepted.
struct event_data {
  uuid event_id;
  std::string type;
  uint32_t schema_version = 1;
  bytes data;
  bytes metadata;
  std::string causation_id;
  std::string correlation_id;
  /// Whose key seals the event's personal fields (personal.hpp): empty for
  /// the stream's own. Not stored as such: each sealed field names it.
  std::string subject = {};
};

/// An event as stored. Positions in the global `$all` log start at 1 and have
/// no gaps; versions within a stream start at 1 and have no gaps.
struct recorded_event {
  uuid event_id;
  std::string stream_id;
  uint64_t stream_version = 0;
  uint64_t position = 0;
  std::string type;
  uint32_t schema_version = 1;
  bytes data;
  bytes metadata;
  std::string causation_id;
  std::string correlation_id;
  /// Commit time, microseconds since the Unix epoch (UTC).
  int64_t created_at = 0;
  /// How much of `stream_id` is its aggregate's prefix ("todo-" of
  /// "todo-42"): set by readers that know the prefixes (handlers'
  /// consumers), 0 otherwise. Not stored.
  uint32_t prefix_length = 0;

  /// The stream id without its aggregate's prefix: "42" of "todo-42" (the
  /// whole stream id when no prefix is known).
  std::string_view aggregate_id() const noexcept {
    return std::string_view{stream_id}.substr(prefix_length <= stream_id.size() ? prefix_length : 0);
  }
  /// The metadata, typed (empty when it does not decode); see metadata.hpp.
  sourcery::metadata meta() const;

  friend bool operator==(const recorded_event&, const recorded_event&) = default;
};

/// The outcome of an accepted append.
struct append_result {
  /// The stream's version after the append.
  uint64_t stream_version = 0;
  /// Global positions of the first and last appended event; both 0 when the
  /// append carried no events.
  uint64_t first_position = 0;
  uint64_t last_position = 0;
};

/// What the store knows of one stream.
struct stream_info {
  std::string stream_id;
  /// Version of the last event; 0 for a stream that does not exist.
  uint64_t version = 0;
  bool exists = false;
  bool deleted = false;
  /// First and last write, microseconds since the Unix epoch; 0 if none.
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

/// The latest snapshot of a stream: the aggregate state after
/// `stream_version`, encoded by the aggregate. `snapshot_version` is the
/// aggregate's state-layout version: a loader ignores snapshots of another one.
struct snapshot {
  std::string stream_id;
  uint64_t stream_version = 0;
  uint32_t snapshot_version = 1;
  std::string type;
  bytes data;
  int64_t created_at = 0;

  friend bool operator==(const snapshot&, const snapshot&) = default;
};

enum class read_direction : uint8_t { forward, backward };

} // namespace sourcery::persistence
