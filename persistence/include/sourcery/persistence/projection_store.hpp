#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "sourcery/persistence/lmdb_store.hpp"

namespace sourcery::persistence {

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

/// Read models in LMDB, with each projection's checkpoint in the same
/// environment, so a batch of read-model writes and the position it brings
/// the projection to commit in one transaction: a crash can neither lose an
/// event's effect nor apply it twice (what Commanded's Ecto projections do
/// with `projection_versions`).
///
/// A projection owns tables of ordered key -> value rows (bytes, typically
/// msgpack or JSON). Writes go through `write`; reads run in read
/// transactions on the caller's thread and never wait for a writer.
class projection_store {
public:
  /// Errors: io_error, foreign_store, invalid_argument.
  static caf::expected<std::unique_ptr<projection_store>> open(projection_store_options options);
  ~projection_store();
  projection_store(const projection_store&) = delete;
  projection_store& operator=(const projection_store&) = delete;

  /// The writes of one `write` call, valid only inside it. Reads see the
  /// writes made so far.
  class writer {
  public:
    void put(std::string_view table, std::string_view key, std::string_view value);
    std::optional<std::string> get(std::string_view table, std::string_view key) const;
    /// Whether the row existed.
    bool erase(std::string_view table, std::string_view key);
    /// Rows of `table` in key order.
    std::vector<std::pair<std::string, std::string>> scan(std::string_view table) const;

  private:
    friend class projection_store;
    writer(void* txn, unsigned dbi, std::string_view projection) : txn_(txn), dbi_(dbi), projection_(projection) {}
    /// The full key of a row, in a buffer reused from call to call.
    const std::string& row_key(std::string_view table, std::string_view key) const;
    /// The cached row of the key in `key_`, read from LMDB on a miss.
    struct row {
      std::optional<std::string> value; // nullopt: no such row (or erased)
      bool dirty = false;
    };
    row& cached(bool load) const;
    /// Writes the dirty rows, in key order, into the transaction.
    void flush() const;

    struct hash {
      using is_transparent = void;
      size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };
    void* txn_;
    unsigned dbi_;
    std::string_view projection_;
    mutable int failed_ = 0; // first LMDB error; the transaction is then aborted
    mutable std::string key_;
    // Write-behind cache: a batch that updates the same rows again and again
    // (counters, balances) touches each row once in LMDB, at the end.
    mutable std::unordered_map<std::string, row, hash, std::equal_to<>> rows_;
  };

  /// Runs `f` in one write transaction and, unless it returns an error,
  /// records `position` as the checkpoint of `projection` and commits
  /// durably. `f` may run more than once (when the map must grow): it must
  /// only write through the writer. Errors: `f`'s error, store_full,
  /// io_error, invalid_argument (position not past the checkpoint).
  caf::error write(std::string_view projection, uint64_t position, const std::function<caf::error(writer&)>& f);
  /// As `write`, for rows only: the checkpoint is neither checked nor moved.
  caf::error update(std::string_view projection, const std::function<caf::error(writer&)>& f);

  /// The position `projection` has reached (nullopt: never written).
  caf::expected<std::optional<uint64_t>> checkpoint(std::string_view projection) const;
  /// Every projection's checkpoint as (name, position), in name order.
  caf::expected<std::vector<std::pair<std::string, uint64_t>>> checkpoints() const;
  caf::expected<std::optional<std::string>> get(std::string_view projection, std::string_view table,
                                                std::string_view key) const;
  caf::expected<std::vector<std::pair<std::string, std::string>>> scan(std::string_view projection,
                                                                       std::string_view table) const;
  /// Every table of `projection`, in order, as (table, key, value): to
  /// compare read models, or export one.
  caf::expected<std::vector<std::tuple<std::string, std::string, std::string>>>
  dump(std::string_view projection) const;

  /// Drops every row and the checkpoint of `projection`, in one transaction.
  caf::error reset(std::string_view projection);

private:
  struct impl;
  explicit projection_store(std::unique_ptr<impl> impl);
  caf::error commit(std::string_view projection, const uint64_t* checkpoint, const std::function<caf::error(writer&)>& f);
  std::unique_ptr<impl> impl_;
};

} // namespace sourcery::persistence
