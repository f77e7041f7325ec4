#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sourcery/persistence/durability.hpp"
#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/store_inspection.hpp"

namespace sourcery::persistence {

namespace detail {
struct lmdb_view;
}


struct lmdb_options {
  /// Directory of the store; created if missing. It must be empty or hold a
  /// Sourcery store.
  std::string path;
  durability mode = durability::durable;
  /// Initial size of the memory map; it doubles whenever a commit finds it full.
  size_t initial_map_size = size_t{64} << 20;
  /// The map never grows past this; a commit that needs more fails with
  /// store_full. 0: no limit but the disk's.
  size_t max_map_size = 0;
  /// Most queued operations one group commit takes.
  size_t max_batch = 8192;
  /// Open for reading only (tools inspecting a store that an application is
  /// writing). Writes fail with invalid_argument.
  bool read_only = false;
  /// Check every page in use when opening, and refuse a damaged file with
  /// corrupt_store rather than let LMDB follow a bad page (see
  /// `sourcery verify` for the events' own consistency). One read per page:
  /// about a second per few GB. Without it only a truncated file is refused.
  bool check_pages = true;
};

/// Counters of the group-commit writer, for benchmarks and metrics.
struct lmdb_stats {
  uint64_t commits = 0;    ///< group commits of appends
  uint64_t operations = 0; ///< appends and other writes they carried
  uint64_t map_resizes = 0;
  size_t map_size = 0;
  /// Transactions that indexed streams waiting in memory (short ones), at
  /// most a few hundred each: idle ones, and append groups every 2 s.
  uint64_t index_transactions = 0;
};

/// The embedded event store on LMDB.
///
/// One writer thread takes every operation waiting in its queue, applies them
/// in one write transaction, commits once, then answers each (group commit).
/// An operation that fails its own checks (a wrong expected version, say)
/// fails alone; the rest of the batch commits. Reads run on the caller's
/// thread in LMDB read transactions and never wait for the writer.
///
/// Layout (named databases of one environment, keys big-endian):
/// `events` position -> record; `stream_index` stream number + version ->
/// position; `streams` stream id -> stream record; `snapshots`;
/// `checkpoints`; `meta` (format marker and version); `subject_keys`
/// subject -> key record (personal.hpp), each padded to an overflow page of
/// its own.
///
/// Personal data: a subject's key is created in the transaction of the
/// first event (or snapshot) that needs it. `forget` deletes it, and once
/// that transaction committed, the writer zeroes the key's page in the file
/// and syncs it: LMDB never copies an overflow page (it frees it whole), so
/// that page held the key's only copy. The price: a page (4 KiB) per subject.
class lmdb_store final : public event_store, public store_maintenance {
public:
  /// Opens or creates the store at `options.path`.
  /// Errors: foreign_store, unsupported_format_version, corrupt_store,
  /// io_error, invalid_argument.
  static caf::expected<std::unique_ptr<lmdb_store>> open(lmdb_options options);

  ~lmdb_store() override;

  uint64_t head_position() const override;

  lmdb_stats stats() const;

  // -- operators' tools -----------------------------------------------------------

  /// The space the store takes, per database and for the memory map.
  caf::expected<store_usage> usage() const override;

  /// A full integrity check: `$all` gapless, every record decodes, every
  /// stream record and index entry agrees with the log, snapshots and
  /// checkpoints within range. Runs in one read transaction (on a live
  /// store, it checks the moment it began) and never writes. `progress`
  /// gets (events checked, events in the log) now and then.
  /// Errors: only those that keep the check from starting.
  caf::expected<verify_report> verify(const progress_callback& progress = {}) const override;

  /// Restores events from an export, keeping their ids, positions, versions
  /// and commit times. Positions must continue the log (head + 1, head + 2,
  /// ...) and versions their streams. Errors: invalid_argument (out of
  /// order), wrong_expected_version, stream_deleted, and those of `append`.
  caf::expected<void> import_events(std::vector<recorded_event> events) override;
  /// Restores a soft-deleted stream with its version and times.
  caf::expected<void> import_deleted_stream(const persistence::stream_info& stream) override;
  /// Saves a snapshot keeping its `created_at`.
  caf::expected<void> import_snapshot(snapshot snap) override;

  /// The on-disk format version this build writes and reads.
  static constexpr uint32_t format_version = 1;

protected:
  void do_append(std::string stream, expected_version expected, std::vector<event_data> events,
                 append_callback done) override;
  caf::expected<void> do_delete_stream(std::string_view stream, expected_version expected) override;
  caf::error do_read_stream(std::string_view stream, uint64_t from, size_t max_count, read_direction direction,
                            std::vector<recorded_event>& out) const override;
  caf::error do_read_all(uint64_t from, size_t max_count, read_direction direction,
                         std::vector<recorded_event>& out) const override;
  caf::expected<persistence::stream_info> do_stream_info(std::string_view stream) const override;
  void do_save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done) override;
  caf::expected<void> do_save_snapshot(snapshot snap) override;
  caf::expected<std::optional<snapshot>> do_load_snapshot(std::string_view stream) const override;
  caf::expected<void> do_delete_snapshot(std::string_view stream) override;
  caf::expected<void> do_save_checkpoint(std::string_view name, uint64_t position) override;
  caf::expected<std::optional<uint64_t>> do_load_checkpoint(std::string_view name) const override;
  caf::error do_list_streams(std::string_view after, size_t max_count,
                             std::vector<persistence::stream_info>& out) const override;
  caf::error do_list_snapshots(std::string_view after, size_t max_count, std::vector<snapshot>& out) const override;
  caf::expected<std::vector<std::pair<std::string, uint64_t>>> do_list_checkpoints() const override;
  void refresh_head() const override;
  bool keeps_personal_data() const noexcept override { return true; }
  caf::error do_load_key_records(const std::vector<std::string>& subjects,
                                 std::vector<std::pair<std::string, bytes>>& found) const override;
  caf::expected<bool> do_forget(std::string_view subject) override;

private:
  /// Runs `f` with the raw databases in one read transaction.
  caf::error with_view(const std::function<caf::error(const detail::lmdb_view&)>& f) const;

  struct impl;
  explicit lmdb_store(std::unique_ptr<impl> impl);
  std::unique_ptr<impl> impl_;
};

} // namespace sourcery::persistence
