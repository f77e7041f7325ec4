#pragma once

#include <cstdint>
#include <string_view>

#include <caf/expected.hpp>

#include "sourcery/persistence/event.hpp"

namespace sourcery::persistence::detail {

// Stored records are a msgpack array followed by the CRC-32C of that array
// (4 bytes, little-endian). Arrays rather than maps here: the record layout
// is ours and versioned by the store's format version; event payloads inside
// stay msgpack maps so user types can evolve.

/// Appends the encoded record of `ev` (its position is the key, not stored).
void encode_record(const recorded_event& ev, bytes& out);

/// Appends the record of a new event at `stream_version` of `stream`.
void encode_record(const event_data& ev, std::string_view stream, uint64_t stream_version,
                   int64_t created_at, bytes& out);

/// Decodes a record stored at `position`. Errors: corrupt_record.
caf::expected<recorded_event> decode_record(const uint8_t* data, size_t size, uint64_t position);

void encode_snapshot(const snapshot& snap, bytes& out);
caf::expected<snapshot> decode_snapshot(const uint8_t* data, size_t size, std::string_view stream);

/// Limits for msgpack from untrusted sources.
struct msgpack_limits {
  static constexpr size_t array = 1u << 20;
  static constexpr size_t map = 1u << 20;
  static constexpr size_t str = 64u << 20;
  static constexpr size_t bin = 256u << 20;
  static constexpr size_t ext = 64u << 20;
  static constexpr size_t depth = 64;
};

} // namespace sourcery::persistence::detail
