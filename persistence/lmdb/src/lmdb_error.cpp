#include "lmdb_error.hpp"

#include <cerrno>
#include <string>

#include <lmdb.h>

#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

caf::error mdb_error(int rc, std::string_view what) {
  std::string msg = std::string{what} + ": " + mdb_strerror(rc);
  switch (rc) {
    case MDB_MAP_FULL:
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
      return make_error(store_errc::store_full, std::move(msg));
    case MDB_CORRUPTED:
    case MDB_PANIC:
    case MDB_PAGE_NOTFOUND:
    case MDB_BAD_TXN:
      return make_error(store_errc::corrupt_store, std::move(msg));
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
      return make_error(store_errc::foreign_store, std::move(msg));
    case EACCES:
    case EROFS:
      return make_error(store_errc::io_error, std::move(msg));
    default:
      return make_error(store_errc::io_error, std::move(msg));
  }
}

} // namespace sourcery::persistence::detail
