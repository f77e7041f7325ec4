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
inline void add_tenant_routes(sourcery::http::gateway& gw, sourcery::application_host& host) {
  namespace http = sourcery::http;
  using call = void (*)(todo_api&, http::request&, const http::responder&);
  auto with_tenant = [&host](call f) {
    return [&host, f](http::request& req, http::responder answer) {
      auto name = req.param("tenant");
      if (!sourcery::application_host::valid_name(name))
        return answer(http::error{404, "not_found",
                                  "no tenant '" + name + "': a tenant's name is 1 to 40 of a-z, 0-9 and '-'"});
      auto t = host.open(name);
      if (!t)
        return answer(http::dispatch_failure(t.error()));
      // The tenant stays open until this request is answered.
      http::responder keep{[t = *t, answer](http::response r) { answer(std::move(r)); }};
      f(*(*t)->state<todo_api>(), req, keep);
    };
  };
  gw.route("GET", "/{tenant}/todos",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.list(r, ans); }));
  gw.route("POST", "/{tenant}/todos",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.create(r, ans); }));
  gw.route("DELETE", "/{tenant}/todos",
           with_tenant([](todo_api& a, http::request&, const http::responder& ans) { a.clear(ans); }));
  gw.route("GET", "/{tenant}/todos/{id}",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.get(r, ans); }));
  gw.route("PATCH", "/{tenant}/todos/{id}",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.update(r, ans); }));
  gw.route("DELETE", "/{tenant}/todos/{id}",
           with_tenant([](todo_api& a, http::request& r, const http::responder& ans) { a.remove(r, ans); }));
}

} // namespace todo
