#pragma once

// The Todo-Backend API per tenant (todo-server --tenants): /{tenant}/todos
// is tenant `{tenant}`'s own todo list, in a store of its own, opened on
// its first request and closed when idle (sourcery::application_host).

#include <memory>
#include <string>

#include "sourcery/runtime/tenants/application_host.hpp"
#include "todo_api.hpp"

namespace todo {

/// What a tenant's requests need: its API over its application and read model.
inline caf::expected<std::shared_ptr<void>> setup_tenant(sourcery::application& app, const std::string& name) {
  auto models = start_read_model(app);
  if (!models)
    return models.error();
  return std::shared_ptr<void>{std::make_shared<todo_api>(app, **models, "/" + name)};
}

/// The host configuration of todo tenants, their stores under `store`.
inline sourcery::application_host_config tenants_config(std::string store) {
  sourcery::application_host_config cfg;
  cfg.store = std::move(store);
  cfg.routes = [] { return routes(); };
  cfg.setup = setup_tenant;
  return cfg;
}

/// Routes /{tenant}/todos and /{tenant}/todos/{id} to the tenant's API. A
/// name outside [a-z0-9-]{1,40} is 404; a tenant whose store cannot open
/// answers as a failed dispatch would (503, 507, ...), and only that tenant.
/// Only a POST creates a tenant: to the other requests, a tenant never
/// created is an empty list (GET and DELETE of the list: 200 [] and 204, as
/// for a tenant with no todos) or a missing todo (404), and nothing is made
/// on disk or in the database for a name someone merely asked for.
inline void add_tenant_routes(sourcery::http::gateway& gw, sourcery::application_host& host) {
  namespace http = sourcery::http;
  using call = void (*)(todo_api&, http::request&, const http::responder&);
  using absent = http::response (*)(http::request&);
  auto with_tenant = [&host](call f, absent if_none = nullptr) {
    return [&host, f, if_none](http::request& req, http::responder answer) {
      auto name = req.param("tenant");
      if (!sourcery::application_host::valid_name(name))
        return answer(http::error{404, "not_found",
                                  "no tenant '" + name + "': a tenant's name is 1 to 40 of a-z, 0-9 and '-'"});
      auto t = if_none ? host.open_existing(name) : host.open(name);
      if (!t && if_none && sourcery::persistence::code_of(t.error()) == sourcery::persistence::store_errc::no_store)
        return answer(if_none(req));
      if (!t)
        return answer(http::dispatch_failure(t.error()));
      // The tenant stays open until this request is answered.
      http::responder keep{[t = *t, answer](http::response r) { answer(std::move(r)); }};
      f(*(*t)->state<todo_api>(), req, keep);
    };
  };
  absent no_todos = [](http::request&) { return http::json_response(200, http::json::array()); };
  absent cleared = [](http::request&) { return http::empty_response(204); };
  absent missing = [](http::request& r) { return http::error_response(no_todo(r.param("id"))); };
  gw.route("GET", "/{tenant}/todos",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.list(r, ans); }, no_todos));
  gw.route("POST", "/{tenant}/todos",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.create(r, ans); }));
  gw.route("DELETE", "/{tenant}/todos",
           with_tenant([](todo_api& a, http::request&, const http::responder& ans) { a.clear(ans); }, cleared));
  gw.route("GET", "/{tenant}/todos/{id}",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.get(r, ans); }, missing));
  gw.route("PATCH", "/{tenant}/todos/{id}",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.update(r, ans); }, missing));
  gw.route("DELETE", "/{tenant}/todos/{id}",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.remove(r, ans); }, missing));
}

} // namespace todo
