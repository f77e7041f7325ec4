#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace sourcery::persistence {

/// Error codes of the event store and the event-type registry. Every public
/// call returns `caf::expected<T>`; its `caf::error` carries one of these
/// codes in category `store_error_category` and a human message as context.
enum class store_errc : uint8_t {
  /// Not an error.
  none = 0,
  /// The stream's version differs from the expected version of an append or
  /// delete. The message names both versions; nothing was written.
  wrong_expected_version,
  /// The stream has been soft-deleted: no further appends or reads.
  stream_deleted,
  /// An argument is out of its documented range (empty or reserved stream id,
  /// zero batch size, oversized key, ...). Nothing was written.
  invalid_argument,
  /// Event data or metadata is not a well-formed msgpack map.
  malformed_payload,
  /// A stored record fails its checksum or cannot be decoded. The store is
  /// left untouched; `sourcery verify` locates the damage.
  corrupt_record,
  /// The registry knows no C++ type for this event type name.
  unknown_event_type,
  /// The event is of another type than the one asked for.
  type_mismatch,
  /// The disk or the configured maximum map size is exhausted. The failed
  /// batch was rolled back; earlier commits are intact.
  store_full,
  /// The operating system reported an I/O error. The batch was rolled back.
  io_error,
  /// The directory holds some other program's files or another LMDB database.
  foreign_store,
  /// The directory holds a Sourcery store of a format version we cannot read.
  unsupported_format_version,
  /// LMDB reported a corrupted environment (MDB_CORRUPTED / MDB_PANIC).
  corrupt_store,
  /// The store has been closed; the call was not carried out.
  store_closed,
  /// A persistent subscription of that name is already running.
  subscription_exists,
  /// A handler asked the subscription to stop with an error.
  handler_failed,
  /// A wait ended before its condition held.
  timeout,
  /// Another process has the store open for writing: one writing process
  /// per store directory (read-only opens are allowed beside it).
  store_in_use,
  /// The database server cannot be reached, or the connection to it was lost
  /// and could not be re-established in time. Carries libpq's message.
  unavailable,
  /// The database server refused the login (wrong password, no such role,
  /// no pg_hba.conf entry). Carries the server's message.
  authentication_failed,
  /// The appending node does not hold the lease of the stream's shard (it
  /// lost it, or never had it): nothing was written (append_fence.hpp).
  fenced,
  /// There is no Sourcery store where one was to be read: a PostgreSQL
  /// schema without our tables, opened by a caller that may not create
  /// them (a tool that only reads). Nothing was created.
  no_store,
};

/// The category atom of `store_errc` errors.
constexpr caf::atom_value store_error_category = caf::atom("store");

/// Stable, lower-case name of a code, e.g. "wrong_expected_version".
std::string_view to_string(store_errc code) noexcept;

/// Builds an error carrying `code` and a human message.
caf::error make_error(store_errc code, std::string message);

/// Builds an error with the code's default message.
caf::error make_error(store_errc code);

/// The `store_errc` of `err`, or `none` if it belongs to another category.
store_errc code_of(const caf::error& err) noexcept;

/// "code: message" for any error; for errors of other categories, CAF's
/// numeric rendering. Never throws.
std::string describe(const caf::error& err);

} // namespace sourcery::persistence
