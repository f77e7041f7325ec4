#pragma once

#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <lmdb.h>

namespace sourcery::persistence::detail {

/// Walks every B-tree of the environment, and its free list, page by page
/// (read with pread, never through the map) and refuses a damaged one with a
/// corrupt_store error that names the page: a page past the file or the
/// last page in use, a page whose header, flags, bounds or node offsets are
/// impossible, a child or overflow page out of range, a page reached twice,
/// leaves at different depths, a free page still in a tree.
///
/// LMDB trusts its pages. Reading a damaged one can fault (fault_guard turns
/// that into an error), but writing through one can overrun a heap buffer
/// (a damaged page's bounds copied into a dirty page), which nothing can
/// catch afterwards. So damage at rest is refused here, before any use.
/// A read transaction pins the snapshot walked, so another process may write
/// meanwhile. Call right after mdb_env_open. Cost: one pread per page in use.
caf::error check_pages(MDB_env* env, std::string_view what);

/// The same walk over the snapshot `txn` (a live read transaction) reads:
/// what is damaged, or "" if nothing is. `raced`: another process committed
/// twice since `txn` began, so its meta page is gone and nothing was checked.
std::string find_damaged_page(MDB_env* env, MDB_txn* txn, bool& raced);

} // namespace sourcery::persistence::detail
