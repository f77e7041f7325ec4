#pragma once

#include <cstdint>
#include <string_view>

#include <caf/expected.hpp>
#include <msgpack.hpp>

#include "sourcery/persistence/event.hpp"

namespace sourcery::persistence::detail {

// A stored event record: a fixed header (stream version, link to the
// stream's previous event, commit time; 8 bytes each, big-endian), a msgpack
// array with the rest, and the CRC-32C of header and array (4 bytes,
// little-endian). The header is filled in by the writer at commit time; the
// array is encoded by the caller before the event reaches the writer, so the
// single writer thread does as little as possible. Arrays rather than maps
// here: the record layout is ours, versioned by the store's format version;
// event payloads inside stay msgpack maps so user types can evolve.

constexpr size_t record_header_size = 24;
constexpr size_t record_trailer_size = 4;

/// Encodes the caller-side part of a record of `ev` appended to `stream`.
void encode_record_body(const event_data& ev, std::string_view stream, bytes& out);

/// Writes a complete record into `dst`, which holds
/// `record_header_size + body.size() + record_trailer_size` bytes.
void write_record(uint8_t* dst, uint64_t stream_version, uint64_t prev_position, int64_t created_at,
                  const bytes& body);

/// Decodes a record stored at `position`; stores its link to the stream's
/// previous event in `prev_position` if given. Errors: corrupt_record.
caf::expected<recorded_event> decode_record(const uint8_t* data, size_t size, uint64_t position,
                                            uint64_t* prev_position = nullptr);

/// The same into an existing event, reusing its strings' and buffers'
/// capacity: reading many events through one `recorded_event` allocates
/// nothing in the steady state.
caf::error decode_record_into(recorded_event& ev, const uint8_t* data, size_t size, uint64_t position,
                              uint64_t* prev_position = nullptr);

/// Checks that `payload` is exactly one msgpack map, without allocating.
/// Returns an empty string if so, else what is wrong.
std::string check_msgpack_map(const uint8_t* data, size_t size);

void encode_snapshot(const snapshot& snap, bytes& out);
caf::expected<snapshot> decode_snapshot(const uint8_t* data, size_t size, std::string_view stream);

/// Unpacks one msgpack value from `data[off, size)` into a zone owned by the
/// calling thread, reused from call to call (no allocation in the steady
/// state); strings and binaries point into `data`. The object is valid until
/// the next call on this thread and while `data` lives. Throws msgpack's
/// exceptions on malformed input.
msgpack::object unpack_reused(const uint8_t* data, size_t size, size_t& off);

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
