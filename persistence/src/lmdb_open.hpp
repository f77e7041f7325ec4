#pragma once

#include <string_view>

#include <caf/error.hpp>
#include <lmdb.h>

namespace sourcery::persistence::detail {

/// Refuses an environment whose data file is shorter than the pages its
/// newest meta page says are in use (a truncated copy, a cut-off restore).
/// LMDB maps the file, so touching a page past its end would kill the
/// process with SIGBUS; this turns that into a corrupt_store error. Call it
/// right after mdb_env_open, before any transaction.
caf::error check_not_truncated(MDB_env* env, std::string_view what);

/// mdb_txn_begin while opening (no other transaction of this environment
/// is live): when another process has grown the map since, adopt its size
/// and begin again, rather than fail with MDB_MAP_RESIZED.
int begin_at_open(MDB_env* env, unsigned flags, MDB_txn** txn) noexcept;

} // namespace sourcery::persistence::detail
