#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "pg_connection.hpp"
#include "sourcery/persistence/schema_setup.hpp"

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

/// Opens `component` in `schema` as `setup` allows (schema_setup.hpp):
/// checks the tables there (the component's row in `schema_version` at
/// `version`, and all of its tables), upgrades an older version in place
/// (upgrade, create), adds a missing component to an existing store
/// (upgrade, create: a store is one whose `schema_version` names the
/// event store), and creates the schema and the `schema_version` table
/// when missing (create only). Runs under a transaction-level advisory
/// lock so that processes opening one database at once do not race.
/// Errors: no_store (no such component, and `setup` may not add it: the
/// message says to run `sourcery init`), foreign_store (tables with our
/// names that are not ours), unsupported_format_version, and the
/// connection's.
caf::error ensure_component(pg::connection& c, const std::string& schema, const pg_component& component,
                            pg::deadline until, schema_setup setup);

/// The event store's tables.
extern const pg_component event_store_component;
/// The read models' tables.
extern const pg_component read_models_component;
/// The subjects' keys (personal data): pg_subject_keys.cpp.
extern const pg_component personal_data_component;

/// Whether `name` is a schema name we accept (see postgres_options::schema).
bool valid_schema_name(std::string_view name);

} // namespace sourcery::persistence::detail
