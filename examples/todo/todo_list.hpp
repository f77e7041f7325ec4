#pragma once

// The read model the API serves: one entry per live todo. The API
// dispatches with strong consistency towards it, so a client reads its own
// writes. On LMDB it is a table of JSON rows; on PostgreSQL it is a real
// SQL table, `todos (id, title, completed, "order", created)`, that any SQL
// client can query -- written in the transaction that moves the
// projection's checkpoint, so each event counts exactly once.

#include <algorithm>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "sourcery/actors/projector.hpp"
#include "todo.hpp"

namespace todo {

struct todo_list {
  static constexpr const char* projection_name = "todos";
  static constexpr const char* table = "todos";
  using event = todo::event;
  using writer = sourcery::persistence::projection_store::writer;
  using sql_session = sourcery::persistence::sql_session;
  using json = nlohmann::json;

  /// The todo id of a stream "todo-<id>".
  static std::string id_of(const sourcery::event_context& ctx) { return ctx.stream_id.substr(5); }

  caf::error project(const todo_created& e, const sourcery::event_context& ctx, writer& w) {
    if (auto* sql = w.sql())
      return run(*sql, "INSERT INTO @.todos (id, title, completed, \"order\", created) VALUES ($1, $2, false, $3, $4)"
                       " ON CONFLICT (id) DO NOTHING",
                 {id_of(ctx), e.title, e.has_order ? std::optional{std::to_string(e.order)} : std::nullopt,
                  std::to_string(ctx.position)});
    json row{{"title", e.title}, {"completed", false}, {"created", ctx.position}};
    if (e.has_order)
      row["order"] = e.order;
    w.put(table, id_of(ctx), row.dump());
    return {};
  }
  caf::error project(const todo_title_changed& e, const sourcery::event_context& ctx, writer& w) {
    if (auto* sql = w.sql())
      return run(*sql, "UPDATE @.todos SET title = $2 WHERE id = $1", {id_of(ctx), e.title});
    return change(w, ctx, [&](json& row) { row["title"] = e.title; });
  }
  caf::error project(const todo_completed&, const sourcery::event_context& ctx, writer& w) {
    if (auto* sql = w.sql())
      return run(*sql, "UPDATE @.todos SET completed = true WHERE id = $1", {id_of(ctx)});
    return change(w, ctx, [](json& row) { row["completed"] = true; });
  }
  caf::error project(const todo_uncompleted&, const sourcery::event_context& ctx, writer& w) {
    if (auto* sql = w.sql())
      return run(*sql, "UPDATE @.todos SET completed = false WHERE id = $1", {id_of(ctx)});
    return change(w, ctx, [](json& row) { row["completed"] = false; });
  }
  caf::error project(const todo_order_changed& e, const sourcery::event_context& ctx, writer& w) {
    if (auto* sql = w.sql())
      return run(*sql, "UPDATE @.todos SET \"order\" = $2 WHERE id = $1", {id_of(ctx), std::to_string(e.order)});
    return change(w, ctx, [&](json& row) { row["order"] = e.order; });
  }
  caf::error project(const todo_deleted&, const sourcery::event_context& ctx, writer& w) {
    if (auto* sql = w.sql())
      return run(*sql, "DELETE FROM @.todos WHERE id = $1", {id_of(ctx)});
    w.erase(table, id_of(ctx));
    return {};
  }

  /// A rebuild starts from an empty table (the rows are dropped for us).
  static caf::error reset(writer& w) {
    if (auto* sql = w.sql()) {
      if (auto err = create_table(*sql))
        return err;
      return run(*sql, "DELETE FROM @.todos", {});
    }
    return {};
  }

  /// Creates the SQL table when the read models speak SQL; before the
  /// projection starts.
  static caf::error prepare(sourcery::persistence::projection_store& models) {
    if (!models.sql_schema())
      return {};
    return models.update(projection_name, [](writer& w) { return create_table(*w.sql()); });
  }

  // -- reading ----------------------------------------------------------------

  /// One todo as {title, completed, order?, created}, nullopt when none.
  static caf::expected<std::optional<json>> find(const sourcery::persistence::projection_store& models,
                                                 const std::string& id) {
    if (auto* schema = models.sql_schema()) {
      auto r = models.query(in(*schema, "SELECT title, completed, \"order\", created FROM @.todos WHERE id = $1"), {id});
      if (!r)
        return r.error();
      if (r->rows.empty())
        return std::optional<json>{};
      return std::optional<json>{from_sql(r->rows[0], 0)};
    }
    auto r = models.get(projection_name, table, id);
    if (!r)
      return r.error();
    if (!*r)
      return std::optional<json>{};
    return std::optional<json>{json::parse(**r)};
  }

  /// Every todo as (id, row), in creation order.
  static caf::expected<std::vector<std::pair<std::string, json>>>
  all(const sourcery::persistence::projection_store& models) {
    std::vector<std::pair<std::string, json>> out;
    if (auto* schema = models.sql_schema()) {
      auto r = models.query(in(*schema, "SELECT id, title, completed, \"order\", created FROM @.todos ORDER BY created"));
      if (!r)
        return r.error();
      for (auto& row : r->rows)
        out.emplace_back(row[0].value_or(""), from_sql(row, 1));
      return out;
    }
    auto rows = models.scan(projection_name, table);
    if (!rows)
      return rows.error();
    for (auto& [id, value] : *rows)
      out.emplace_back(id, json::parse(value));
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.second.at("created") < b.second.at("created"); });
    return out;
  }

private:
  static std::string in(const std::string& schema, std::string sql) {
    for (auto at = sql.find("@."); at != std::string::npos; at = sql.find("@.", at))
      sql.replace(at, 1, schema);
    return sql;
  }
  static caf::error run(sql_session& sql, const std::string& statement, const std::vector<sourcery::persistence::sql_value>& params) {
    auto r = sql.exec(in(sql.schema(), statement), params);
    return r ? caf::error{} : r.error();
  }
  static caf::error create_table(sql_session& sql) {
    return run(sql, "CREATE TABLE IF NOT EXISTS @.todos (id text PRIMARY KEY, title text NOT NULL,"
                    " completed boolean NOT NULL, \"order\" bigint, created bigint NOT NULL)", {});
  }
  static json from_sql(const std::vector<sourcery::persistence::sql_value>& row, size_t at) {
    json out{{"title", row[at].value_or("")}, {"completed", row[at + 1] == "t"},
             {"created", std::stoull(row[at + 3].value_or("0"))}};
    if (row[at + 2])
      out["order"] = std::stoll(*row[at + 2]);
    return out;
  }
  template <class F>
  static caf::error change(writer& w, const sourcery::event_context& ctx, F f) {
    auto id = id_of(ctx);
    auto old = w.get(table, id);
    if (!old)
      return {}; // a change of a todo this read model never saw created: nothing to show
    auto row = json::parse(*old);
    f(row);
    w.put(table, id, row.dump());
    return {};
  }
};

} // namespace todo
