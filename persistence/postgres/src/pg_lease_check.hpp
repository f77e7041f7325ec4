#pragma once

// The one lease check every fenced write runs inside its own transaction
// (append_fence.hpp): events (pg_writer.cpp), event handlers' checkpoints
// (postgres_store.cpp) and read models (pg_projection_store.cpp). Defined
// with the lease table, in pg_coordination.cpp.

#include <string>
#include <string_view>

#include "sourcery/persistence/append_fence.hpp"

namespace sourcery::persistence::detail {

/// A query of the names of the leases in `schema`'s lease table ("@" where
/// the statement's schema is substituted) that
/// cluster `cluster` records for owner `owner`, unexpired by the database's
/// clock and matching `which` (a condition on `l.name` and `l.epoch`);
/// `cluster`, `owner` and `which` are SQL text (parameters: "$3"). The rows
/// are locked FOR KEY SHARE in name order until the transaction ends: an
/// acquire (FOR UPDATE) waits for the write, a renewal does not, and every
/// writer locks in the same order.
std::string held_leases_sql(std::string_view schema, std::string_view cluster, std::string_view owner,
                            std::string_view which);

/// The schema `fence` checks leases in, quoted (append_fence::lease_schema),
/// or "@" (the statement's own) when it names none.
std::string lease_schema_of(const append_fence& fence);

} // namespace sourcery::persistence::detail
