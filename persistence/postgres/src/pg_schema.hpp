#pragma once

#include "postgres_state.hpp"

namespace sourcery::persistence::detail {

/// Creates the store's tables in `state.options.schema` when none exist, or
/// checks the ones there: same schema version, and all of ours. Runs under
/// a transaction-level advisory lock so that processes opening one
/// database at once do not race. Errors: foreign_store,
/// unsupported_format_version, and the connection's.
caf::error ensure_schema(const postgres_state& state, pg::connection& c);

/// Whether `name` is a schema name we accept (see postgres_options::schema).
bool valid_schema_name(std::string_view name);

} // namespace sourcery::persistence::detail
