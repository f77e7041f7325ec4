#pragma once

#include <string>

#include <caf/error.hpp>
#include <lmdb.h>

#include "sourcery/persistence/lmdb_store.hpp"

namespace sourcery::persistence::detail {

/// Opens `env` (created and sized by the caller) at `path`: MDB_NOTLS, read
/// only or not, the flags of `mode`. Then makes LMDB's assertions jump back
/// to a fault guard (lmdb_guard.hpp) and refuses a damaged file with
/// corrupt_store before any use: every page in use when `check_pages`
/// (lmdb_page_check.hpp), else only a file shorter than its pages in use
/// (touching a page past the end of a mapped file is SIGBUS). `what` starts
/// every error message.
caf::error open_env(MDB_env* env, const std::string& path, bool read_only, durability mode, bool check_pages,
                    const std::string& what);

/// mdb_txn_begin while opening (no other transaction of this environment
/// is live): when another process has grown the map since, adopt its size
/// and begin again, rather than fail with MDB_MAP_RESIZED.
int begin_at_open(MDB_env* env, unsigned flags, MDB_txn** txn) noexcept;

} // namespace sourcery::persistence::detail
