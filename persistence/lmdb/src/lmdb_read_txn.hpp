#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <shared_mutex>
#include <utility>

#include <caf/expected.hpp>
#include <lmdb.h>

#include "big_endian.hpp"
#include "lmdb_error.hpp"
#include "lmdb_guard.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

/// A read transaction, holding its environment's resize lock shared: growing
/// the map takes that lock exclusively (LMDB requires no live transaction in
/// the process then).
struct read_txn {
  std::shared_lock<std::shared_mutex> lock;
  MDB_txn* txn = nullptr;
  read_txn() = default;
  read_txn(read_txn&& other) noexcept : lock(std::move(other.lock)), txn(std::exchange(other.txn, nullptr)) {}
  read_txn& operator=(read_txn&&) = delete;
  ~read_txn() {
    if (txn != nullptr)
      mdb_txn_abort(txn);
  }
};

/// Begins a read transaction; when another process has grown the map,
/// adopts its size and begins again.
inline caf::expected<read_txn> begin_read(MDB_env* env, std::shared_mutex& resize_mtx) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    read_txn r;
    r.lock = std::shared_lock{resize_mtx};
    int rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &r.txn);
    if (rc == 0)
      return r;
    r.txn = nullptr;
    if (rc != MDB_MAP_RESIZED)
      return mdb_error(rc, "begin read transaction");
    r.lock.unlock();
    std::unique_lock excl{resize_mtx};
    mdb_env_set_mapsize(env, 0);
  }
  return make_error(store_errc::io_error, "begin read transaction: map keeps being resized");
}

/// A checkpoint (8 bytes, big-endian) stored under `key` in `dbi`, or
/// nullopt; `what` names it in errors. Both stores keep theirs this way.
inline caf::expected<std::optional<uint64_t>> read_checkpoint(MDB_txn* txn, MDB_dbi dbi, std::string_view key,
                                                              const std::string& what) {
  MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
  int rc = safe::get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::optional<uint64_t>{};
  if (rc != 0)
    return mdb_error(rc, "read " + what);
  if (v.mv_size != 8)
    return make_error(store_errc::corrupt_store, what + " has a wrong size");
  return std::optional<uint64_t>{get_be64(static_cast<const uint8_t*>(v.mv_data))};
}

} // namespace sourcery::persistence::detail
