#pragma once

// The read model the API serves: one row per live todo. The API dispatches
// with strong consistency towards it, so a client reads its own writes. On
// PostgreSQL it is a real SQL table, `todos (id, title, completed, "order",
// created)`, that any SQL client can query; on LMDB, JSON rows. Either way
// written in the transaction that moves the projection's checkpoint, so
// each event counts exactly once.

#include "sourcery/actors/events/projector.hpp"
#include "sourcery/persistence/read_model_table.hpp"
#include "todo.hpp"

namespace todo {

struct todo_row {
  std::string id, title;
  bool completed = false;
  std::optional<int64_t> order;
  uint64_t created = 0; ///< the position of its creation: the list's order
  SOURCERY_FIELDS(id, title, completed, order, created)
};

inline const sourcery::persistence::table<todo_row> todos{
  "todos", "id",
  R"(id text PRIMARY KEY, title text NOT NULL, completed boolean NOT NULL, "order" bigint, created bigint NOT NULL)"};

struct todo_list {
  static constexpr const char* projection_name = "todos";
  using event = todo::event;
  using writer = sourcery::persistence::projection_store::writer;
  using context = sourcery::event_context;

  caf::error init(sourcery::persistence::projection_store& models) { return todos.create(models, projection_name); }
  static caf::error reset(writer& w) { return todos.clear(w); }

  caf::error project(const todo_created& e, const context& c, writer& w) {
    return todos.put(w, {std::string{c.aggregate_id()}, e.title, false, e.has_order ? std::optional{e.order} : std::nullopt, c.position});
  }
  caf::error project(const todo_title_changed& e, const context& c, writer& w) {
    return todos.update(w, c.aggregate_id(), [&](todo_row& r) { r.title = e.title; });
  }
  caf::error project(const todo_completed&, const context& c, writer& w) {
    return todos.update(w, c.aggregate_id(), [](todo_row& r) { r.completed = true; });
  }
  caf::error project(const todo_uncompleted&, const context& c, writer& w) {
    return todos.update(w, c.aggregate_id(), [](todo_row& r) { r.completed = false; });
  }
  caf::error project(const todo_order_changed& e, const context& c, writer& w) {
    return todos.update(w, c.aggregate_id(), [&](todo_row& r) { r.order = e.order; });
  }
  caf::error project(const todo_deleted&, const context& c, writer& w) { return todos.erase(w, c.aggregate_id()); }
};

} // namespace todo
