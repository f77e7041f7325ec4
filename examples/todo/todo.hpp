#pragma once

// The todo of the Todo-Backend API as an event-sourced aggregate. Its events
// say what happened to a todo (created, title changed, completed, ...), not
// which fields a PATCH carried: one PATCH may record several of them, or none.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "sourcery/actors/aggregates/domain.hpp"
#include "sourcery/runtime/fwd.hpp"

namespace todo {

// -- commands ------------------------------------------------------------------
struct create_todo {
  std::string id, title; std::optional<int64_t> order = {}; bool completed = false;
  SOURCERY_FIELDS(id, title, order, completed)
};
/// Absent fields stay as they are.
struct update_todo {
  std::string id; std::optional<std::string> title = {};
  std::optional<bool> completed = {}; std::optional<int64_t> order = {};
  SOURCERY_FIELDS(id, title, completed, order)
};
struct delete_todo { std::string id; SOURCERY_FIELDS(id) };

// -- events --------------------------------------------------------------------
struct todo_created { std::string title; bool has_order = false; int64_t order = 0; SOURCERY_EVENT("todo.created", title, has_order, order) };
struct todo_title_changed { std::string title; SOURCERY_EVENT("todo.title_changed", title) };
struct todo_completed { SOURCERY_EVENT("todo.completed") };
struct todo_uncompleted { SOURCERY_EVENT("todo.uncompleted") };
struct todo_order_changed { int64_t order = 0; SOURCERY_EVENT("todo.order_changed", order) };
struct todo_deleted { SOURCERY_EVENT("todo.deleted") };

// -- the aggregate -------------------------------------------------------------
struct todo {
  using event = std::variant<todo_created, todo_title_changed, todo_completed, todo_uncompleted, todo_order_changed,
                             todo_deleted>;
  enum class stage : uint8_t { none, live, deleted };
  stage at = stage::none;
  std::string title;
  bool completed = false;
  std::optional<int64_t> order;

  sourcery::outcome<event> execute(const create_todo& c) const {
    if (at != stage::none)
      return sourcery::reject("already_exists", "todo " + c.id + " exists");
    if (auto bad = check_title(c.title))
      return *bad;
    std::vector<event> out{todo_created{c.title, c.order.has_value(), c.order.value_or(0)}};
    if (c.completed)
      out.emplace_back(todo_completed{});
    return out;
  }
  sourcery::outcome<event> execute(const update_todo& c) const {
    if (at != stage::live)
      return sourcery::reject("not_found", "no todo " + c.id);
    std::vector<event> out;
    if (c.title && *c.title != title) {
      if (auto bad = check_title(*c.title))
        return *bad;
      out.emplace_back(todo_title_changed{*c.title});
    }
    if (c.completed && *c.completed != completed)
      out.emplace_back(*c.completed ? event{todo_completed{}} : event{todo_uncompleted{}});
    if (c.order && c.order != order)
      out.emplace_back(todo_order_changed{*c.order});
    return out;
  }
  sourcery::outcome<event> execute(const delete_todo& c) const {
    if (at != stage::live)
      return sourcery::reject("not_found", "no todo " + c.id);
    return todo_deleted{};
  }

  void apply(const todo_created& e) {
    at = stage::live;
    title = e.title;
    order = e.has_order ? std::optional{e.order} : std::nullopt;
  }
  void apply(const todo_title_changed& e) { title = e.title; }
  void apply(const todo_completed&) { completed = true; }
  void apply(const todo_uncompleted&) { completed = false; }
  void apply(const todo_order_changed& e) { order = e.order; }
  void apply(const todo_deleted&) { at = stage::deleted; }

  /// A title is text a person can read: not blank, at most 1,000 bytes.
  static std::optional<sourcery::rejection> check_title(const std::string& t) {
    if (t.find_first_not_of(" \t\r\n") == std::string::npos || t.size() > 1000)
      return sourcery::reject("invalid_title", "a title must not be blank, and has at most 1000 bytes");
    return std::nullopt;
  }
};

/// Where todo's commands go (todo_routes.cpp: the router, and with it the
/// runtime, is compiled there, not wherever the domain is read).
sourcery::router routes();

} // namespace todo
