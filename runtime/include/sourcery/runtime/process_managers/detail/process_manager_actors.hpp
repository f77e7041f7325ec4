#pragma once

// The actors behind a process manager (see process_manager.hpp): a router
// that reads `$all` after the saved position and hands each event to the
// instances it concerns, and the instances. They are compiled once, in
// runtime/src/process_managers/process_manager_actors.cpp; the user's type
// reaches them through `process_type_of<P>()` (process_model.hpp).

#include <functional>
#include <memory>

#include "sourcery/actors/events/event_consumer.hpp"
#include "sourcery/persistence/fwd.hpp"
#include "sourcery/runtime/process_managers/detail/process_model.hpp"
#include "sourcery/runtime/process_managers/process_manager.hpp"
#include "sourcery/supervision/child_spec.hpp"

namespace sourcery {

template <class C>
process_command command(C cmd) {
  process_command out;
  out.name = type_name_of<C>();
  out.value = cmd;
  out.send = [cmd = std::move(cmd)](dispatcher& app, dispatch_options opts,
                                    std::function<void(caf::expected<dispatch_result>)> done) {
    app.dispatch_async(cmd, std::move(opts), std::move(done));
  };
  return out;
}

namespace detail {

/// The child spec of the process manager `type` ("process:<name>", transient).
supervision::child_spec process_child_spec(const process_type* type, persistence::event_store* store,
                                           persistence::projection_store* models,
                                           const persistence::event_registry* types, const stream_prefixes* prefixes,
                                           dispatcher* app, std::shared_ptr<handler_status> status,
                                           process_options options, std::function<void(const caf::actor&)> started);

} // namespace detail

/// The child spec of process manager `P` ("process:<name>", transient).
template <process_manager P>
supervision::child_spec process_child_spec(persistence::event_store* store, persistence::projection_store* models,
                                           const persistence::event_registry* types, const stream_prefixes* prefixes,
                                           dispatcher* app, std::shared_ptr<handler_status> status,
                                           process_options options, std::function<void(const caf::actor&)> started) {
  return detail::process_child_spec(detail::process_type_of<P>(), store, models, types, prefixes, app,
                                    std::move(status), std::move(options), std::move(started));
}

} // namespace sourcery
