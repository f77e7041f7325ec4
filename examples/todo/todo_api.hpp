#pragma once

// The Todo-Backend API (todobackend.com) over the todo aggregate and its
// read model:
//
//   GET    /todos        every todo            200 [todo…]
//   POST   /todos        {"title", "order"?, "completed"?}   201 todo, Location
//   DELETE /todos        every todo            204
//   GET    /todos/{id}                         200 todo | 404
//   PATCH  /todos/{id}   {"title"?, "completed"?, "order"?}  200 todo | 404
//   DELETE /todos/{id}                         204 | 404
//
// A todo is {"id", "title", "completed", "order"?, "url"}; `url` is absolute,
// built from the request's Host header. Writes answer once the read model
// shows them (strong consistency), so a client reads its own writes.

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "sourcery/persistence/uuid.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/http/gateway.hpp"
#include "todo.hpp"
#include "todo_list.hpp"

namespace todo {

namespace http = sourcery::http;
using json = nlohmann::json;

/// The answer for todo `id` that does not exist (in a list, or in a tenant
/// never created).
inline http::error no_todo(const std::string& id) {
  return http::error{404, "not_found", "no todo " + id};
}

class todo_api {
public:
  /// Commands go through `commands`; queries read `models`. `prefix`: the
  /// path before /todos (a tenant's "/acme"), for the todos' urls.
  todo_api(sourcery::dispatcher& commands, sourcery::persistence::projection_store& models, std::string prefix = {})
    : app_(commands), models_(models), prefix_(std::move(prefix)) {}

  void add_routes(http::gateway& gw) {
    gw.route("GET", "/todos", [this](http::request& req, http::responder answer) { list(req, answer); });
    gw.route("POST", "/todos", [this](http::request& req, http::responder answer) { create(req, answer); });
    gw.route("DELETE", "/todos", [this](http::request&, http::responder answer) { clear(answer); });
    gw.route("GET", "/todos/{id}", [this](http::request& req, http::responder answer) { get(req, answer); });
    gw.route("PATCH", "/todos/{id}", [this](http::request& req, http::responder answer) { update(req, answer); });
    gw.route("DELETE", "/todos/{id}", [this](http::request& req, http::responder answer) { remove(req, answer); });
  }

  // The routes' handlers (public: a server of tenants calls them itself).

  /// A row of the read model as the API shows it; `origin` includes the prefix.
  static json present(const std::string& origin, const todo_row& row) {
    json t{{"id", row.id}, {"title", row.title}, {"completed", row.completed}, {"url", origin + "/todos/" + row.id}};
    if (row.order)
      t["order"] = *row.order;
    return t;
  }

  /// The read-model row of todo `id`, nullopt when there is none.
  http::expected<std::optional<todo_row>> row(const std::string& id) {
    auto r = todos.find(models_, todo_list::projection_name, id);
    if (!r)
      return http::dispatch_failure(r.error());
    return *r;
  }

  /// Every todo, in the order they were created.
  http::expected<std::vector<todo_row>> rows() {
    auto r = todos.all(models_, todo_list::projection_name, "created");
    if (!r)
      return http::dispatch_failure(r.error());
    return std::move(*r);
  }

  static sourcery::dispatch_options strong() {
    sourcery::dispatch_options o;
    o.consistency_level = sourcery::consistency::strong;
    o.consistent_with = {todo_list::projection_name};
    return o;
  }

  void list(const http::request& req, const http::responder& answer) {
    auto all = rows();
    if (!all)
      return answer(all.err());
    auto out = json::array();
    for (auto& r : *all)
      out.push_back(present(base(req), r));
    answer(http::json_response(200, out));
  }

  void get(const http::request& req, const http::responder& answer) {
    auto id = req.param("id");
    auto r = row(id);
    if (!r)
      return answer(r.err());
    if (!*r)
      return answer(no_todo(id));
    answer(http::json_response(200, present(base(req), **r)));
  }

  /// The fields a POST or PATCH body may carry, checked, as an update (no id yet).
  static http::expected<update_todo> fields_of(const http::request& req) {
    auto body = http::json_object_body(req);
    if (!body)
      return body.err();
    auto title = http::optional_field<std::string>(*body, "title");
    auto completed = http::optional_field<bool>(*body, "completed");
    auto order = http::optional_field<int64_t>(*body, "order");
    if (auto* bad = http::first_error(title, completed, order))
      return *bad;
    return update_todo{{}, *title, *completed, *order};
  }

  void create(const http::request& req, const http::responder& answer) {
    auto f = fields_of(req);
    if (!f)
      return answer(f.err());
    if (!f->title)
      return answer(http::error{422, "missing_field", "field 'title' is required"});
    create_todo cmd{sourcery::persistence::uuid::time_ordered().to_string(), *f->title, f->order,
                    f->completed.value_or(false)};
    answer_with_row(base(req), cmd.id, cmd, 201, answer);
  }

  void update(const http::request& req, const http::responder& answer) {
    auto f = fields_of(req);
    if (!f)
      return answer(f.err());
    f->id = req.param("id");
    auto known = row(f->id);
    if (!known)
      return answer(known.err());
    if (!*known)
      return answer(no_todo(f->id));
    answer_with_row(base(req), f->id, *f, 200, answer);
  }

  void remove(const http::request& req, const http::responder& answer) {
    auto id = req.param("id");
    auto known = row(id);
    if (!known)
      return answer(known.err());
    if (!*known)
      return answer(no_todo(id));
    app_.dispatch_async(delete_todo{id}, strong(), [answer](caf::expected<sourcery::dispatch_result> r) {
      if (!r)
        return answer(http::dispatch_failure(r.error()));
      if (!r->accepted)
        return answer(http::rejected(r->why, r->why.reason == "not_found" ? 404 : 422));
      answer(http::empty_response(204));
    });
  }

  /// Deletes every todo: one command each, answered once all are.
  void clear(const http::responder& answer) {
    auto all = rows();
    if (!all)
      return answer(all.err());
    if (all->empty())
      return answer(http::empty_response(204));
    struct progress {
      std::atomic<size_t> left;
      std::atomic<bool> failed{false};
    };
    auto p = std::make_shared<progress>();
    p->left = all->size();
    for (auto& r : *all) {
      app_.dispatch_async(delete_todo{r.id}, strong(), [p, answer](caf::expected<sourcery::dispatch_result> r) {
        // A todo deleted meanwhile (not_found) is fine: it is gone either way.
        if (!r && !p->failed.exchange(true))
          answer(http::dispatch_failure(r.error()));
        if (p->left.fetch_sub(1) == 1 && !p->failed.load())
          answer(http::empty_response(204));
      });
    }
  }

  /// Dispatches `cmd` and answers with the todo's row as it then is.
  template <class C>
  void answer_with_row(std::string origin, std::string id, const C& cmd, unsigned status,
                       const http::responder& answer) {
    app_.dispatch_async(cmd, strong(), [this, origin, id, status, answer](caf::expected<sourcery::dispatch_result> r) {
      if (!r)
        return answer(http::dispatch_failure(r.error()));
      if (!r->accepted)
        return answer(http::rejected(r->why, r->why.reason == "not_found" ? 404 : 422));
      auto now = row(id);
      if (!now)
        return answer(now.err());
      if (!*now)
        return answer(no_todo(id));
      auto res = http::json_response(status, present(origin, **now));
      if (status == 201)
        res.with_header("Location", origin + "/todos/" + id);
      answer(std::move(res));
    });
  }

private:
  std::string base(const http::request& req) const { return req.origin() + prefix_; }

  sourcery::dispatcher& app_;
  sourcery::persistence::projection_store& models_;
  std::string prefix_;
};

/// Starts the todo application's read model: call once after
/// `application::start`. Returns where the API reads it.
inline caf::expected<sourcery::persistence::projection_store*> start_read_model(sourcery::application& app) {
  auto models = app.read_models();
  if (!models)
    return models.error();
  // The API queries the table from its first request, maybe before the
  // projection's `init` has run: create it now.
  if (auto err = todos.create(**models, todo_list::projection_name))
    return err;
  if (auto p = app.add_projection<todo_list>({}, true); !p)
    return p.error();
  return *models;
}

} // namespace todo
