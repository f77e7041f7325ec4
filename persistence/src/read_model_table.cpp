#include "sourcery/persistence/read_model_table.hpp"

#include <algorithm>

#include "sourcery/persistence/sql.hpp"

namespace sourcery::persistence {

namespace {

std::string sql_identifier(std::string_view identifier) {
  std::string out = "\"";
  for (char c : identifier) {
    if (c == '"')
      out += '"';
    out += c;
  }
  return out + "\"";
}

caf::error done(const caf::expected<sql_rows>& r) {
  return r ? caf::error{} : r.error();
}

caf::expected<nlohmann::json> parse_row(const sql_value& text) {
  try {
    return nlohmann::json::parse(text.value_or("null"));
  } catch (const std::exception& e) {
    return make_error(store_errc::malformed_payload, std::string{"a read-model row is not JSON: "} + e.what());
  }
}

using maybe_row = caf::expected<std::optional<nlohmann::json>>;

/// The row a `SELECT to_jsonb(t) ...` answered, if any.
maybe_row first_row(const caf::expected<sql_rows>& r) {
  if (!r)
    return r.error();
  if (r->rows.empty())
    return std::optional<nlohmann::json>(std::nullopt);
  auto row = parse_row(r->rows[0][0]);
  if (!row)
    return row.error();
  return std::optional<nlohmann::json>{std::move(*row)};
}

/// The key field of an LMDB row is its key (rows written before it had
/// the field lack it).
caf::expected<nlohmann::json> lmdb_row(const std::string& key_field, const std::string& key, const std::string& value) {
  auto row = parse_row(value);
  if (row && row->is_object())
    (*row)[key_field] = key;
  return row;
}

/// An LMDB row, if there is one.
maybe_row stored_row(const std::string& key_field, std::string_view key, const std::optional<std::string>& value) {
  if (!value)
    return std::optional<nlohmann::json>(std::nullopt);
  auto row = lmdb_row(key_field, std::string{key}, *value);
  if (!row)
    return row.error();
  return std::optional<nlohmann::json>{std::move(*row)};
}

} // namespace

json_table::json_table(std::string name, std::string key, std::string columns)
  : name_(std::move(name)), key_(std::move(key)), columns_(std::move(columns)) {}

std::string json_table::qualified(const std::string& schema) const {
  return schema + "." + sql_identifier(name_); // the schema comes quoted
}

caf::error json_table::create(projection_store& models, std::string_view projection) const {
  if (models.sql_schema() == nullptr)
    return {};
  return models.update(projection, [&](projection_store::writer& w) {
    auto& sql = *w.sql();
    return done(sql.exec("CREATE TABLE IF NOT EXISTS " + qualified(sql.schema()) + " (" + columns_ + ")"));
  });
}

caf::error json_table::put(projection_store::writer& w, const nlohmann::json& row) const {
  if (!row.is_object() || !row.contains(key_) || !row[key_].is_string())
    return make_error(store_errc::invalid_argument, "a row of " + name_ + " needs its key field " + key_ + " as text");
  if (auto* sql = w.sql()) {
    std::string columns, excluded;
    for (auto& [field, value] : row.items()) {
      if (field == key_)
        continue;
      columns += (columns.empty() ? "" : ", ") + sql_identifier(field);
      excluded += (excluded.empty() ? "EXCLUDED." : ", EXCLUDED.") + sql_identifier(field);
    }
    auto table = qualified(sql->schema());
    std::string statement = "INSERT INTO " + table + " SELECT * FROM jsonb_populate_record(NULL::" + table
                            + ", $1::jsonb) ON CONFLICT (" + sql_identifier(key_) + ") DO ";
    statement += columns.empty() ? "NOTHING" : "UPDATE SET (" + columns + ") = ROW(" + excluded + ")";
    return done(sql->exec(statement, {row.dump()}));
  }
  w.put(name_, row[key_].get<std::string>(), row.dump());
  return {};
}

std::string json_table::select_by_key(const std::string& schema) const {
  return "SELECT to_jsonb(t) FROM " + qualified(schema) + " t WHERE t." + sql_identifier(key_) + " = $1";
}

caf::expected<std::optional<nlohmann::json>> json_table::get(projection_store::writer& w, std::string_view key) const {
  if (auto* sql = w.sql())
    return first_row(sql->exec(select_by_key(sql->schema()), {std::string{key}}));
  return stored_row(key_, key, w.get(name_, key));
}

caf::error json_table::erase(projection_store::writer& w, std::string_view key) const {
  if (auto* sql = w.sql())
    return done(sql->exec("DELETE FROM " + qualified(sql->schema()) + " WHERE " + sql_identifier(key_) + " = $1",
                          {std::string{key}}));
  w.erase(name_, key);
  return {};
}

caf::error json_table::clear(projection_store::writer& w) const {
  if (auto* sql = w.sql()) {
    auto table = qualified(sql->schema());
    if (auto err = done(sql->exec("CREATE TABLE IF NOT EXISTS " + table + " (" + columns_ + ")")))
      return err;
    return done(sql->exec("DELETE FROM " + table));
  }
  for (auto& [key, value] : w.scan(name_))
    w.erase(name_, key);
  return {};
}

caf::expected<std::optional<nlohmann::json>> json_table::find(const projection_store& models,
                                                              std::string_view projection, std::string_view key) const {
  if (auto* schema = models.sql_schema())
    return first_row(models.query(select_by_key(*schema), {std::string{key}}));
  auto value = models.get(projection, name_, key);
  if (!value)
    return value.error();
  return stored_row(key_, key, *value);
}

caf::expected<std::vector<nlohmann::json>> json_table::all(const projection_store& models, std::string_view projection,
                                                           std::string_view order_by) const {
  std::vector<nlohmann::json> out;
  auto order = order_by.empty() ? key_ : std::string{order_by};
  if (auto* schema = models.sql_schema()) {
    auto r = models.query("SELECT to_jsonb(t) FROM " + qualified(*schema) + " t ORDER BY t." + sql_identifier(order));
    if (!r)
      return r.error();
    for (auto& row : r->rows) {
      auto j = parse_row(row[0]);
      if (!j)
        return j.error();
      out.push_back(std::move(*j));
    }
    return out;
  }
  auto rows = models.scan(projection, name_);
  if (!rows)
    return rows.error();
  for (auto& [key, value] : *rows) {
    auto j = lmdb_row(key_, key, value);
    if (!j)
      return j.error();
    out.push_back(std::move(*j));
  }
  std::stable_sort(out.begin(), out.end(), [&](const nlohmann::json& a, const nlohmann::json& b) {
    return a.value(order, nlohmann::json{}) < b.value(order, nlohmann::json{});
  });
  return out;
}

} // namespace sourcery::persistence
