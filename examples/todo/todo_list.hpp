#pragma once

// The read model the API serves: one row per live todo, in an LMDB
// projection. The API dispatches with strong consistency towards it, so a
// client reads its own writes.

#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "sourcery/actors/projector.hpp"
#include "todo.hpp"

namespace todo {

struct todo_list {
  static constexpr const char* projection_name = "todos";
  static constexpr const char* table = "todos";
  using event = todo::event;
  using writer = sourcery::persistence::projection_store::writer;
  using json = nlohmann::json;

  /// The todo id of a stream "todo-<id>".
  static std::string id_of(const sourcery::event_context& ctx) { return ctx.stream_id.substr(5); }

  caf::error project(const todo_created& e, const sourcery::event_context& ctx, writer& w) {
    json row{{"title", e.title}, {"completed", false}, {"created", ctx.position}};
    if (e.has_order)
      row["order"] = e.order;
    w.put(table, id_of(ctx), row.dump());
    return {};
  }
  caf::error project(const todo_title_changed& e, const sourcery::event_context& ctx, writer& w) {
    return change(w, ctx, [&](json& row) { row["title"] = e.title; });
  }
  caf::error project(const todo_completed&, const sourcery::event_context& ctx, writer& w) {
    return change(w, ctx, [](json& row) { row["completed"] = true; });
  }
  caf::error project(const todo_uncompleted&, const sourcery::event_context& ctx, writer& w) {
    return change(w, ctx, [](json& row) { row["completed"] = false; });
  }
  caf::error project(const todo_order_changed& e, const sourcery::event_context& ctx, writer& w) {
    return change(w, ctx, [&](json& row) { row["order"] = e.order; });
  }
  caf::error project(const todo_deleted&, const sourcery::event_context& ctx, writer& w) {
    w.erase(table, id_of(ctx));
    return {};
  }

private:
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
