#pragma once

// What opening a PostgreSQL store, its read models or its cluster tables
// may change in the schema. A schema is created only on request
// (`sourcery init`, an import, a tenant's first use): never as a side
// effect of starting an application or running a tool.

namespace sourcery::persistence {

enum class schema_setup {
  /// Nothing is written: a missing store is no_store, an older one
  /// unsupported_format_version (a tool that only reads).
  none,
  /// A store that exists is upgraded in place and gains the parts added
  /// since (the subjects' keys, the read models, the cluster's tables); a
  /// schema holding no Sourcery store is no_store (an application).
  upgrade,
  /// As upgrade, and a missing schema and store are created.
  create,
};

} // namespace sourcery::persistence
