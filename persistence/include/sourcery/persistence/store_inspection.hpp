#pragma once

// What an operator learns of a store without changing it: the space it
// takes, and whether it is intact.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "sourcery/persistence/event.hpp"

namespace sourcery::persistence {

/// One named database of an LMDB environment, as LMDB accounts for it.
struct database_usage {
  std::string name;
  uint64_t entries = 0;
  uint32_t depth = 0;  // of its B-tree
  uint64_t pages = 0;  // branch, leaf and overflow pages
  uint64_t bytes = 0;  // pages * page size
};

/// The space a store takes.
struct store_usage {
  std::vector<database_usage> databases;
  uint64_t map_size = 0;   // the memory map's current size, bytes
  uint64_t map_used = 0;   // bytes up to the last page in use
  uint64_t file_size = 0;  // data.mdb on disk
  uint32_t page_size = 0;
  uint32_t readers_used = 0;
  uint32_t readers_max = 0;
  uint64_t head_position = 0;
};

/// One thing `verify` found wrong. `kind` is stable, for scripts:
///   damaged_page       an LMDB page is damaged (bounds, flags, a page out of
///                      range or reached twice, the free list); the other
///                      checks, which read through those pages, are not run
///   lmdb               LMDB itself reported damage (a pass stopped there)
///   log_gap            positions missing from `$all`
///   bad_record         an event record that does not decode (checksum, layout)
///   bad_payload        event data or metadata that is not a msgpack map
///   unknown_stream     an event of a stream that has no stream record
///   stream_order       an event out of its stream's version order
///   broken_link        a record's link to its stream's previous event is wrong
///   bad_stream_record  a stream record that does not decode, or reuses a number
///   stream_version     a stream record disagreeing with the events in the log
///   index_missing      a stream version the stream index should hold and lacks
///   index_mismatch     an index entry pointing at the wrong or a missing event
///   index_orphan       an index entry of no stream, or past the stream's end
///   bad_snapshot       a snapshot that does not decode
///   snapshot_ahead     a snapshot past its stream's version, or of no stream
///   bad_checkpoint     a checkpoint of the wrong size
///   checkpoint_ahead   a checkpoint past the end of `$all`
struct store_problem {
  std::string kind;
  std::string message;
};

/// The outcome of a full integrity check.
struct verify_report {
  uint64_t events = 0;
  uint64_t streams = 0;
  uint64_t index_entries = 0;
  uint64_t snapshots = 0;
  uint64_t checkpoints = 0;
  /// The first problems found (at most `max_problems`), and how many in all.
  std::vector<store_problem> problems;
  uint64_t problem_count = 0;
  static constexpr size_t max_problems = 1000;

  bool ok() const noexcept { return problem_count == 0; }
  void add(std::string kind, std::string message) {
    if (problems.size() < max_problems)
      problems.push_back({std::move(kind), std::move(message)});
    ++problem_count;
  }
};

/// Called now and then by long operations with the work done and the work in
/// all (same unit: events, usually).
using progress_callback = std::function<void(uint64_t done, uint64_t total)>;

/// The operators' side of a durable event store (LMDB, PostgreSQL): what
/// `sourcery stats`, `verify` and `import` need beyond the event_store
/// contract. Errors are values, as everywhere.
class store_maintenance {
public:
  virtual ~store_maintenance() = default;
  /// The space the store takes, per database (LMDB) or table (PostgreSQL).
  virtual caf::expected<store_usage> usage() const = 0;
  /// A full integrity check of one moment of the store: `$all` gapless,
  /// every record decodes, every stream's versions contiguous and matching
  /// its record, snapshots and checkpoints within range. Never writes.
  /// Errors: only those that keep the check from starting.
  virtual caf::expected<verify_report> verify(const progress_callback& progress = {}) const = 0;
  /// Restores events from an export, keeping their ids, positions, versions
  /// and commit times: positions must continue the log (head + 1, ...) and
  /// versions their streams. Errors: invalid_argument, wrong_expected_version,
  /// stream_deleted, and those of `append`.
  virtual caf::expected<void> import_events(std::vector<recorded_event> events) = 0;
  /// Restores a soft-deleted stream with its version and times.
  virtual caf::expected<void> import_deleted_stream(const stream_info& stream) = 0;
  /// Saves a snapshot keeping its `created_at`.
  virtual caf::expected<void> import_snapshot(snapshot snap) = 0;
};

} // namespace sourcery::persistence
