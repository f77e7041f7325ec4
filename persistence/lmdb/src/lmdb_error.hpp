#pragma once

#include <string_view>

#include <caf/error.hpp>

namespace sourcery::persistence::detail {

/// An LMDB return code as a store error: full map or disk -> store_full,
/// damage -> corrupt_store, not an LMDB file -> foreign_store, else io_error.
caf::error mdb_error(int rc, std::string_view what);

} // namespace sourcery::persistence::detail
