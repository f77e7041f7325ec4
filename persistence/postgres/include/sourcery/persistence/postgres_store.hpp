#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sourcery/persistence/append_fence.hpp"
#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/durability.hpp"
#include "sourcery/persistence/schema_setup.hpp"
#include "sourcery/persistence/store_inspection.hpp"

namespace sourcery::persistence {

namespace detail {
struct postgres_state;
}

struct postgres_options {
  /// A libpq connection string: `postgresql://user@host:port/db?...` or
  /// `host=/var/run/postgresql dbname=app`.
  std::string conninfo;
  /// The PostgreSQL schema holding every table of this store: several
  /// applications can share one database. Letters, digits and '_', at most
  /// 48 bytes, not starting with a digit.
  std::string schema = "sourcery";
  /// What opening may change in the schema (schema_setup.hpp): by default
  /// an existing store is upgraded in place, and a missing one is no_store.
  schema_setup setup = schema_setup::upgrade;
  /// `durable` (the default): an append is answered after its COMMIT
  /// returned with synchronous_commit = on. Any other mode commits with
  /// synchronous_commit = off: a server crash may lose the last commits.
  durability mode = durability::durable;
  /// Connecting (and re-connecting) gives up after this.
  std::chrono::milliseconds connect_timeout{5000};
  /// Every call waits at most this long for the server; an append that
  /// cannot commit in this time fails with timeout (or unavailable).
  std::chrono::milliseconds operation_timeout{10000};
  /// Connections for reads (opened on demand), besides the writer's and the
  /// listener's.
  size_t pool_size = 4;
  /// Most events one group commit carries.
  size_t max_batch = 4096;
  /// How often a silent listener connection is checked (and the head read):
  /// NOTIFY is only a hint.
  std::chrono::milliseconds poll_interval{1000};
  /// The server ends a transaction of ours left idle this long. Appends
  /// never leave one open across a round trip (a batch is one statement);
  /// a read model's transaction may, and must not hold a lease row that
  /// another node waits for longer than the lease lives: keep it below
  /// the cluster's `down_after`.
  std::chrono::milliseconds idle_in_transaction_timeout{1500};
};

/// Counters of the group-commit writer, for benchmarks and metrics.
struct postgres_stats {
  uint64_t commits = 0;    ///< transactions that committed appends
  uint64_t appends = 0;    ///< appends they carried
  uint64_t retries = 0;    ///< batches run again (conflict with another process, lost connection)
  uint64_t reconnects = 0; ///< connections re-established (writer, listener, readers)
  uint64_t notifications = 0; ///< NOTIFYs received by the listener
};

/// The event store on PostgreSQL (15 or later), shared by every process that
/// opens the same database and schema.
///
/// `$all` is gapless and in commit order: positions come from one counter
/// row (`log_head`) updated inside the append transaction, so a transaction
/// that takes positions holds the row until its COMMIT, and no reader can
/// see position p + 1 before p. Each process batches every waiting append
/// into one transaction (group commit), so the row is taken once per batch,
/// not once per append. `UNIQUE (stream_id, stream_version)` guards against
/// any other writer; event ids are unique, so an append whose COMMIT
/// outcome was lost with its connection is found on retry and answered from
/// what is stored, never applied twice.
///
/// A dedicated connection LISTENs for the one NOTIFY each committed batch
/// sends, and wakes subscribers; they read by position, and a slow poll
/// covers a silent connection.
///
/// Tables (in `options.schema`): `schema_version`, `log_head`, `streams`,
/// `events`, `snapshots`, `checkpoints`.
class postgres_store final : public event_store, public store_maintenance {
public:
  /// Connects, opens the store as `options.setup` allows (creating it only
  /// with schema_setup::create), and starts the writer and the listener.
  /// Errors: invalid_argument (bad conninfo or schema name), no_store (no
  /// store in the schema, and `setup` may not create one), unavailable,
  /// authentication_failed, foreign_store (tables with our names that are
  /// not ours), unsupported_format_version, timeout.
  static caf::expected<std::unique_ptr<postgres_store>> open(postgres_options options);

  ~postgres_store() override;

  uint64_t head_position() const override;

  /// Checks each append's lease in its batch's statement, against the
  /// table `cluster_leases` of this schema (postgres_coordination.hpp); an
  /// append whose lease this node does not hold at that epoch, unexpired,
  /// is answered `fenced`. The lease rows are locked FOR KEY SHARE until
  /// the statement commits: an acquire (FOR UPDATE) waits for it, so a
  /// lease cannot change hands while a batch it covers commits, and a
  /// renewal does not, so renewals never wait behind data writes.
  caf::error fence_appends(std::shared_ptr<const append_fence> fence) override;

  /// unavailable while the listener cannot reach the server, or its probe
  /// (every poll_interval) has waited two seconds for an answer.
  caf::error health() const override;

  postgres_stats stats() const;

  /// The schema version this build creates and reads.
  static constexpr int32_t schema_version = 1;

  // -- operators' tools -------------------------------------------------------

  /// Rows and bytes per table.
  caf::expected<store_usage> usage() const override;
  /// `$all` gapless, every stream's versions contiguous and matching its
  /// row, snapshots and checkpoints within range, every record decodes.
  caf::expected<verify_report> verify(const progress_callback& progress = {}) const override;
  /// Restores events from an export, keeping ids, positions, versions and
  /// commit times: positions must continue the log (head + 1, ...), versions
  /// their streams. Errors: invalid_argument, wrong_expected_version,
  /// stream_deleted, and those of `append`.
  caf::expected<void> import_events(std::vector<recorded_event> events) override;
  /// Restores a soft-deleted stream with its version and times.
  caf::expected<void> import_deleted_stream(const persistence::stream_info& stream) override;
  /// Saves a snapshot keeping its `created_at`.
  caf::expected<void> import_snapshot(snapshot snap) override;

  // -- whole schemas (imports write a staging copy, then swap it in) -------------

  /// The head of the store in `schema`; 0 when the schema holds none.
  static caf::expected<uint64_t> head_of(const std::string& conninfo, const std::string& schema,
                                         std::chrono::milliseconds timeout = std::chrono::seconds{10});
  /// How many server sessions of Sourcery programs other than the caller
  /// use `schema` (by their application_name): running applications.
  static caf::expected<int64_t> sessions_on(const std::string& conninfo, const std::string& schema,
                                            std::chrono::milliseconds timeout = std::chrono::seconds{10});
  /// Drops `schema` and everything in it (a staging copy).
  static caf::error drop_schema(const std::string& conninfo, const std::string& schema,
                                std::chrono::milliseconds timeout = std::chrono::seconds{10});
  /// Renames `staging` to `target` in one transaction, dropping `target`
  /// first if it holds an empty store (or nothing). Errors: invalid_argument
  /// when `target` holds events, and the connection's.
  static caf::error replace_schema(const std::string& conninfo, const std::string& staging, const std::string& target,
                                   std::chrono::milliseconds timeout = std::chrono::seconds{10});

protected:
  void do_append(std::string stream, expected_version expected, std::vector<event_data> events,
                 append_callback done) override;
  caf::expected<void> do_delete_stream(std::string_view stream, expected_version expected) override;
  caf::error do_read_stream(std::string_view stream, uint64_t from, size_t max_count, read_direction direction,
                            std::vector<recorded_event>& out) const override;
  caf::error do_read_all(uint64_t from, size_t max_count, read_direction direction,
                         std::vector<recorded_event>& out) const override;
  caf::expected<persistence::stream_info> do_stream_info(std::string_view stream) const override;
  caf::expected<void> do_save_snapshot(snapshot snap) override;
  void do_save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done) override;
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
  friend struct detail::postgres_state;
  /// Reads the head from the database now (refresh_head waits its turn).
  void refresh_head_now() const;
  explicit postgres_store(std::unique_ptr<detail::postgres_state> state);
  std::unique_ptr<detail::postgres_state> state_;
};

} // namespace sourcery::persistence
