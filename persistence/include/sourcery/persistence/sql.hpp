#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace sourcery::persistence {

/// A value in SQL's text form; nullopt is NULL.
using sql_value = std::optional<std::string>;

/// The rows a statement answered, each value in text form.
struct sql_rows {
  std::vector<std::string> columns;
  std::vector<std::vector<sql_value>> rows;
  /// Rows the statement touched (INSERT, UPDATE, DELETE) or returned.
  uint64_t affected = 0;
};

/// SQL on the connection of a read-model store that speaks it (PostgreSQL):
/// what a projection uses to keep its read model in tables of its own, which
/// any SQL client can then query (as Commanded users do with Ecto
/// projections). Inside `projection_store::write`, statements run in the
/// transaction that also moves the projection's checkpoint: exactly once.
class sql_session {
public:
  virtual ~sql_session() = default;
  /// Runs one statement, parameters as $1, $2, ... in text form.
  /// Errors: the server's (store_errc with its SQLSTATE and message); after
  /// one, the write fails and rolls back.
  virtual caf::expected<sql_rows> exec(std::string_view sql, const std::vector<sql_value>& params = {}) = 0;
  /// The schema holding this store's tables, quoted for SQL text
  /// (`"sourcery"`): a projection's own tables belong there too.
  virtual const std::string& schema() const = 0;
};

} // namespace sourcery::persistence
