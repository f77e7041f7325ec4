#pragma once

#include <mutex>
#include <shared_mutex>
#include <utility>

#include <caf/expected.hpp>
#include <lmdb.h>

#include "lmdb_error.hpp"
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

} // namespace sourcery::persistence::detail
