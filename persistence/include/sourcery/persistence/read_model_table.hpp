#pragma once

// A typed table of a projection's read model: rows are a struct of yours
// (with SOURCERY_FIELDS or MSGPACK_DEFINE_MAP), stored where the read
// models are. On PostgreSQL it is a real SQL table, created from the
// column definitions you give, that any SQL client can query; on LMDB it
// is the projection's table of JSON rows. Either way a projection writes it
// in the transaction that moves its checkpoint.
//
//     struct todo_row { std::string id, title; bool completed = false; SOURCERY_FIELDS(id, title, completed) };
//     const sourcery::persistence::table<todo_row> todos{
//       "todos", "id", "id text PRIMARY KEY, title text NOT NULL, completed boolean NOT NULL"};
//
//     todos.put(w, {id, e.title});                                     // in `project`
//     todos.update(w, id, [](todo_row& r) { r.completed = true; });
//     auto row = todos.find(models, "todos", id);                       // queries

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>

#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/map_fields.hpp"
#include "sourcery/persistence/projection_store.hpp"

namespace sourcery::persistence {

/// The table over JSON objects; `table<Row>` is the typed face.
class json_table {
public:
  /// `name`: the table's; `key`: the field that is its primary key (text);
  /// `columns`: the SQL column definitions (used on PostgreSQL only).
  json_table(std::string name, std::string key, std::string columns);

  const std::string& name() const noexcept { return name_; }

  /// Creates the SQL table if it does not exist (nothing to do on LMDB):
  /// from the projection's `init`. Errors: the database's.
  caf::error create(projection_store& models, std::string_view projection) const;
  /// Inserts `row`, or replaces the row with its key.
  caf::error put(projection_store::writer& w, const nlohmann::json& row) const;
  caf::expected<std::optional<nlohmann::json>> get(projection_store::writer& w, std::string_view key) const;
  caf::error erase(projection_store::writer& w, std::string_view key) const;
  /// Deletes every row (a rebuild's `reset`; on LMDB the rebuild drops them itself).
  caf::error clear(projection_store::writer& w) const;

  caf::expected<std::optional<nlohmann::json>> find(const projection_store& models, std::string_view projection,
                                                    std::string_view key) const;
  /// Every row, ordered by field `order_by` (empty: by key).
  caf::expected<std::vector<nlohmann::json>> all(const projection_store& models, std::string_view projection,
                                                 std::string_view order_by = {}) const;

private:
  std::string qualified(const std::string& schema) const;
  std::string select_by_key(const std::string& schema) const;

  std::string name_;
  std::string key_;
  std::string columns_;
};

template <class Row>
class table : public json_table {
public:
  using json_table::json_table;

  caf::error put(projection_store::writer& w, const Row& row) const { return json_table::put(w, to_json(row)); }

  /// Changes the row of `key` with `change(Row&)`; no row, no change.
  template <class F>
  caf::error update(projection_store::writer& w, std::string_view key, F&& change) const {
    auto old = json_table::get(w, key);
    if (!old)
      return old.error();
    if (!*old)
      return {};
    auto row = from_json(**old);
    if (!row)
      return row.error();
    change(*row);
    return json_table::put(w, to_json(*row));
  }

  caf::expected<std::optional<Row>> find(const projection_store& models, std::string_view projection,
                                         std::string_view key) const {
    auto j = json_table::find(models, projection, key);
    if (!j)
      return j.error();
    if (!*j)
      return std::optional<Row>{};
    auto row = from_json(**j);
    if (!row)
      return row.error();
    return std::optional<Row>{std::move(*row)};
  }

  caf::expected<std::vector<Row>> all(const projection_store& models, std::string_view projection,
                                      std::string_view order_by = {}) const {
    auto js = json_table::all(models, projection, order_by);
    if (!js)
      return js.error();
    std::vector<Row> out;
    out.reserve(js->size());
    for (auto& j : *js) {
      auto row = from_json(j);
      if (!row)
        return row.error();
      out.push_back(std::move(*row));
    }
    return out;
  }

  static nlohmann::json to_json(const Row& row) {
    msgpack::sbuffer buf;
    msgpack::pack(buf, row);
    return nlohmann::json::from_msgpack(buf.data(), buf.data() + buf.size());
  }

  /// Errors: malformed_payload for a row that does not convert.
  static caf::expected<Row> from_json(const nlohmann::json& j) {
    try {
      auto bytes = nlohmann::json::to_msgpack(j);
      auto oh = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      Row row{};
      convert_map(oh.get(), row);
      return row;
    } catch (const std::exception& e) {
      return make_error(store_errc::malformed_payload, std::string{"a read-model row does not convert: "} + e.what());
    }
  }
};

} // namespace sourcery::persistence
