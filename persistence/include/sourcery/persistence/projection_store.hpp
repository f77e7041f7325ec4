#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "sourcery/persistence/durability.hpp"
#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/sql.hpp"

namespace sourcery::persistence {

class append_fence;

/// Options of the LMDB read models (`projection_store::open`).
struct projection_store_options {
  /// Directory of the read models; created if missing.
  std::string path;
  durability mode = durability::durable;
  size_t initial_map_size = size_t{16} << 20;
  /// Open for reading only (tools looking at an application's read models
  /// while it runs); writes then fail. The directory must hold read models.
  bool read_only = false;
  /// Check every page in use when opening (see lmdb_options::check_pages).
  bool check_pages = true;
};

/// The read-model store contract: each projection's rows and its checkpoint
/// (the position of `$all` it has reached) commit in one transaction, so a
/// crash can neither lose an event's effect nor apply it twice (what
/// Commanded's Ecto projections do with `projection_versions`). Two
/// implementations pass one conformance suite: LMDB (`open` below) and
/// PostgreSQL (`postgres_projection_store`, which also lets a projection
/// write SQL tables of its own through `writer::sql`).
///
/// A projection owns tables of ordered key -> value rows (bytes, typically
/// msgpack or JSON). Writes go through `write`; reads never wait for a
/// writer. Projection and table names are 1 to 200 bytes without NUL. All
/// calls are thread-safe.
class projection_store {
public:
  /// The LMDB read models in `options.path`.
  /// Errors: io_error, foreign_store, invalid_argument, store_in_use.
  static caf::expected<std::unique_ptr<projection_store>> open(projection_store_options options);
  virtual ~projection_store();
  projection_store(const projection_store&) = delete;
  projection_store& operator=(const projection_store&) = delete;

  /// The writes of one `write` call, valid only inside it. Reads see the
  /// writes made so far.
  class writer {
  public:
    virtual ~writer() = default;
    virtual void put(std::string_view table, std::string_view key, std::string_view value) = 0;
    virtual std::optional<std::string> get(std::string_view table, std::string_view key) const = 0;
    /// Whether the row existed.
    virtual bool erase(std::string_view table, std::string_view key) = 0;
    /// Rows of `table` in key order.
    virtual std::vector<std::pair<std::string, std::string>> scan(std::string_view table) const = 0;
    /// SQL in this write's transaction, or null where the store speaks none
    /// (LMDB). A projection may use both: rows written above are in the
    /// database before a statement runs.
    virtual sql_session* sql() { return nullptr; }
  };

  /// Runs `f` in one write transaction and, unless it returns an error,
  /// records `position` as the checkpoint of `projection` and commits
  /// durably. `f` may run more than once (a map that must grow, a
  /// connection lost before the commit): it must only write through the
  /// writer. Errors: `f`'s error, store_full, io_error, unavailable,
  /// timeout, invalid_argument (position not past the checkpoint).
  virtual caf::error write(std::string_view projection, uint64_t position,
                           const std::function<caf::error(writer&)>& f) = 0;
  /// As `write`, for a consumer that has applied every event up to `after`
  /// and brings the projection to `position`: refused with invalid_argument,
  /// writing nothing, when a checkpoint is stored and it is not `after` --
  /// another writer of the projection (a second process on a shared
  /// database) applied some of these events already. Then read the
  /// checkpoint and go on from there: each event's effect stays once.
  virtual caf::error write_after(std::string_view projection, uint64_t after, uint64_t position,
                                 const std::function<caf::error(writer&)>& f) = 0;
  /// As `write`, for rows only: the checkpoint is neither checked nor moved.
  virtual caf::error update(std::string_view projection, const std::function<caf::error(writer&)>& f) = 0;

  /// The position `projection` has reached (nullopt: never written).
  virtual caf::expected<std::optional<uint64_t>> checkpoint(std::string_view projection) const = 0;
  /// Every projection's checkpoint as (name, position), in name order.
  virtual caf::expected<std::vector<std::pair<std::string, uint64_t>>> checkpoints() const = 0;
  virtual caf::expected<std::optional<std::string>> get(std::string_view projection, std::string_view table,
                                                        std::string_view key) const = 0;
  virtual caf::expected<std::vector<std::pair<std::string, std::string>>> scan(std::string_view projection,
                                                                               std::string_view table) const = 0;
  /// Every table of `projection`, in order, as (table, key, value): to
  /// compare read models, or export one.
  virtual caf::expected<std::vector<std::tuple<std::string, std::string, std::string>>>
  dump(std::string_view projection) const = 0;

  /// Drops every row and the checkpoint of `projection`, and runs `also`
  /// (a projection's own SQL tables to empty), in one transaction.
  virtual caf::error reset(std::string_view projection, const std::function<caf::error(writer&)>& also = {}) = 0;

  /// The batches of a `replace`, written in order.
  class batches {
  public:
    virtual ~batches() = default;
    /// Writes one batch of the new read model; `position` is its
    /// checkpoint once the replacement commits, past the batch before.
    virtual caf::error write(uint64_t position, const std::function<caf::error(writer&)>& f) = 0;
  };

  /// Replaces the read model of `projection` with one built anew (a
  /// rebuild): drops its rows and checkpoint, runs `also` (as `reset`),
  /// then `build`, which writes the new rows in batches; the checkpoint
  /// ends at the last batch's position.
  ///
  /// On PostgreSQL it is all one transaction that holds the projection's
  /// checkpoint row: readers see the old read model until the new one is
  /// complete, and the live projection's writer (in this process or
  /// another) waits, then goes on from the new checkpoint, so no event's
  /// effect is lost or applied twice however the two interleave. On LMDB,
  /// whose read models one process writes (store_in_use keeps others
  /// out), it is `reset`, then one transaction per batch: stop the
  /// projection first. Errors: `build`'s, then those of `reset` and `write`.
  virtual caf::error replace(std::string_view projection, const std::function<caf::error(writer&)>& also,
                             const std::function<caf::error(batches&)>& build);

  /// A read-only query outside any write (serving a projection's SQL
  /// tables). Errors: invalid_argument where the store speaks no SQL, and
  /// the server's.
  virtual caf::expected<sql_rows> query(std::string_view sql, const std::vector<sql_value>& params = {}) const;

  /// The schema of the store's tables, quoted for SQL text, when it speaks
  /// SQL (as `writer::sql()->schema()`); null for LMDB.
  virtual const std::string* sql_schema() const { return nullptr; }

  /// From now on a write that moves a checkpoint commits only while this
  /// node holds that consumer's lease (append_fence.hpp), else `fenced`;
  /// null ends the checks. Errors: invalid_argument for a store a
  /// cluster's nodes cannot share (only a database server's can).
  virtual caf::error fence_writes(std::shared_ptr<const append_fence> fence);

protected:
  projection_store() = default;
};

} // namespace sourcery::persistence
