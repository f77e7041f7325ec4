#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "pg_connection.hpp"

namespace sourcery::persistence::detail {

/// One versioned part of a schema (the event store, the read models, a
/// cluster's tables): its tables, the SQL that creates them ('@' stands for
/// the quoted schema), the version that SQL creates, and the SQL that
/// upgrades each older version in place (upgrades[v - 1]: from v to v + 1).
struct pg_component {
  std::string_view name;
  int32_t version;
  std::initializer_list<const char*> tables;
  std::string_view create_sql;
  std::initializer_list<std::string_view> upgrades = {};
};

/// Creates `component`'s tables in `schema` when none exist (and the schema
/// and its `schema_version` table when missing), or checks the ones there:
/// the component's row in `schema_version` at `version` (an older one is
/// upgraded in place when the component knows how), and all of its tables. Runs under a transaction-level advisory lock so that processes
/// opening one database at once do not race.
/// `create` false: nothing is created or upgraded (a caller that only
/// reads), and a missing component is no_store.
/// Errors: foreign_store (tables with our names that are not ours),
/// unsupported_format_version, no_store, and the connection's.
caf::error ensure_component(pg::connection& c, const std::string& schema, const pg_component& component,
                            pg::deadline until, bool create = true);

/// The event store's tables.
extern const pg_component event_store_component;
/// The read models' tables.
extern const pg_component read_models_component;
/// The subjects' keys (personal data): pg_subject_keys.cpp.
extern const pg_component personal_data_component;

/// Whether `name` is a schema name we accept (see postgres_options::schema).
bool valid_schema_name(std::string_view name);

} // namespace sourcery::persistence::detail
