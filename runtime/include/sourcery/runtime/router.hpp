#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <typeindex>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>

#include "sourcery/actors/aggregate_actor.hpp"
#include "sourcery/runtime/dispatch.hpp"
#include "sourcery/supervision/supervisor.hpp"

namespace sourcery {

/// How an aggregate type runs.
struct aggregate_settings {
  /// Passivate an aggregate's actor after this long without commands (0: never).
  std::chrono::milliseconds lifespan{std::chrono::minutes{5}};
  aggregate_options options;
};

/// A readable name of a type: its `type_name` if it has one, else the C++ name.
std::string demangled_name(const std::type_info& type);
std::string demangled_name(const char* mangled);

template <class T>
std::string name_of_type() {
  if constexpr (requires { T::type_name; })
    return T::type_name;
  else
    return demangled_name(typeid(T));
}

namespace detail {

/// What a running application offers routes.
struct app_core {
  caf::actor_system* system = nullptr;
  persistence::event_store* store = nullptr;
  persistence::event_registry types;
  supervision::supervisor* root = nullptr;
  std::unordered_map<std::type_index, aggregate_settings> settings;
  std::unordered_map<std::type_index, std::shared_ptr<void>> aggregates; // aggregate_runtime<A>
  /// Receives the reports of every supervisor of the application.
  std::function<void(const supervision::supervisor_report&)> observer;
};

/// The current actors of an aggregate type's subtree; restarts replace them.
struct aggregate_slots {
  std::mutex mtx;
  caf::actor aggregates; // the simple_one_for_one supervisor
  caf::actor registry;
};

template <aggregate A>
struct aggregate_runtime {
  std::unique_ptr<aggregate_repository<A>> repo;
  std::shared_ptr<aggregate_slots> slots = std::make_shared<aggregate_slots>();

  caf::actor registry() const {
    std::lock_guard guard{slots->mtx};
    return slots->registry;
  }
};

using done_fn = std::function<void(caf::expected<dispatch_result>)>;

/// Opens aggregate type `A` in a running application: its events, its
/// repository, and its subtree under the root:
///
///     aggregate:<A> (one_for_all)
///     ├── aggregates (simple_one_for_one: one temporary child per open aggregate)
///     └── registry   (routes commands to them, opens and passivates them)
///
/// one_for_all: a registry that crashes forgets its routes, so the open
/// aggregates go with it and reopen from the store on their next command.
template <aggregate A>
caf::error setup_aggregate(app_core& core) {
  std::type_index key{typeid(A)};
  if (core.aggregates.count(key) != 0)
    return {};
  if (auto err = register_events<A>(core.types))
    return err;
  aggregate_settings settings;
  if (auto s = core.settings.find(key); s != core.settings.end())
    settings = s->second;
  auto rt = std::make_shared<aggregate_runtime<A>>();
  rt->repo = std::make_unique<aggregate_repository<A>>(*core.store, core.types, settings.options);
  auto slots = rt->slots;
  supervision::supervisor_flags dyn;
  dyn.name = "aggregates";
  dyn.how = supervision::strategy::simple_one_for_one;
  dyn.intensity = 1'000'000; // temporary children: nothing is restarted
  dyn.observer = core.observer;
  supervision::child_spec aggregates;
  aggregates.id = "aggregates";
  aggregates.type = supervision::child_type::supervisor;
  aggregates.start = [slots, dyn, tmpl = aggregate_child_spec<A>(rt->repo.get(), settings.lifespan)](
                       caf::actor_system& sys, const caf::message&) -> caf::expected<caf::actor> {
    auto sup = supervision::spawn_supervisor(sys, dyn, {tmpl});
    std::lock_guard guard{slots->mtx};
    slots->aggregates = sup;
    return sup;
  };
  supervision::child_spec registry;
  registry.id = "registry";
  registry.start = [slots](caf::actor_system& sys, const caf::message&) -> caf::expected<caf::actor> {
    std::lock_guard guard{slots->mtx};
    slots->registry = sys.spawn(aggregate_registry<A>, slots->aggregates);
    return slots->registry;
  };
  supervision::supervisor_flags subtree;
  subtree.name = "aggregate:" + name_of_type<A>();
  subtree.how = supervision::strategy::one_for_all;
  subtree.intensity = 5;
  subtree.period = std::chrono::seconds{10};
  subtree.observer = core.observer;
  supervision::child_spec sub;
  sub.id = subtree.name;
  sub.type = supervision::child_type::supervisor;
  sub.start = supervision::supervisor_start(subtree, {aggregates, registry});
  auto started = core.root->start_child(sub);
  if (!started)
    return started.error();
  // The subtree starts its children when it first runs; its first answer
  // comes after that, so the registry is in its slot once this returns.
  if (auto kids = supervision::supervisor{*core.system, *started}.which_children(); !kids)
    return kids.error();
  core.aggregates.emplace(key, rt);
  return {};
}

template <aggregate A>
aggregate_runtime<A>& runtime_of(app_core& core) {
  return *std::static_pointer_cast<aggregate_runtime<A>>(core.aggregates.at(std::type_index{typeid(A)}));
}

/// Sends command `cmd` to aggregate `id` of type `A`; `done` gets the answer.
template <aggregate A, class C>
void send_command(app_core& core, std::function<outcome<typename A::event>(const A&, const C&)> decide,
                  std::string id, const C& cmd, const dispatch_options& opts,
                  std::chrono::steady_clock::time_point deadline, done_fn done) {
  auto& rt = runtime_of<A>(core);
  auto state = std::make_shared<std::any>();
  command_for<A> envelope;
  envelope.stream = id;
  envelope.deadline = deadline;
  envelope.decide = [decide, cmd](const A& a) { return decide(a, cmd); };
  envelope.meta = command_meta{opts.causation_id, opts.correlation_id, opts.metadata};
  if (opts.returns == returning::state)
    envelope.on_state = [state](const A& a) { *state = a; };
  if constexpr (requires(const A& a, const C& c) {
                  { a.after_command(c) } -> std::convertible_to<lifespan>;
                })
    envelope.after_command = [cmd](const A& a) { return a.after_command(cmd); };
  auto* store = core.store;
  auto returns = opts.returns;
  envelope.reply_to = std::make_shared<reply_slot>([done = std::move(done), state, store, returns,
                                                    id](caf::expected<dispatch_reply> reply) {
    if (!reply)
      return done(reply.error());
    dispatch_result result;
    result.accepted = reply->accepted;
    result.why = reply->why;
    result.aggregate_id = id;
    result.version = reply->version;
    result.first_position = reply->first_position;
    result.last_position = reply->last_position;
    if (returns == returning::state)
      result.state = std::move(*state);
    if (returns == returning::events && reply->first_position != 0) {
      auto events = store->read_all(reply->first_position, reply->last_position - reply->first_position + 1);
      if (!events)
        return done(events.error());
      result.events = std::move(*events);
    }
    done(std::move(result));
  });
  caf::anon_send(rt.registry(), dispatch_atom::value, std::move(envelope));
}

} // namespace detail

/// Maps command types to aggregates: which aggregate type handles a command
/// and which instance (an identity field or function, with an optional
/// prefix that makes the stream id). Routers compose with `include`.
class router {
public:
  /// Commands `C` go to aggregate `A`'s `execute(const C&)`, instance
  /// `prefix + identity(cmd)`.
  template <aggregate A, class C>
    requires executes<A, C>
  router& route(std::function<std::string(const C&)> identity, std::string prefix = {}) {
    return add<A, C>(std::move(identity), std::move(prefix),
                     [](const A& a, const C& c) -> outcome<typename A::event> { return a.execute(c); });
  }

  /// The identity is the field `field` of the command.
  template <aggregate A, class C>
    requires executes<A, C>
  router& route(std::string C::*field, std::string prefix = {}) {
    return route<A, C>([field](const C& c) { return c.*field; }, std::move(prefix));
  }

  /// A command handler `handler(const A&, const C&) -> outcome` instead of `execute`.
  template <aggregate A, class C, class Handler>
    requires std::is_invocable_r_v<outcome<typename A::event>, Handler, const A&, const C&>
  router& route(std::string C::*field, Handler handler, std::string prefix = {}) {
    return add<A, C>([field](const C& c) { return c.*field; }, std::move(prefix),
                     std::function<outcome<typename A::event>(const A&, const C&)>(std::move(handler)));
  }

  /// Takes every route of `other`. A command type routed twice is an error
  /// reported when the application starts.
  router& include(const router& other);

  struct entry {
    std::string command_name;
    std::string aggregate_name;
    /// The stream id (prefix + identity); empty when the identity is.
    std::function<std::string(const void*)> identity;
    std::function<caf::error(detail::app_core&)> setup;
    std::function<void(detail::app_core&, std::string, const void*, const dispatch_options&,
                       std::chrono::steady_clock::time_point, detail::done_fn)>
      send;
  };

  const std::unordered_map<std::type_index, entry>& routes() const noexcept { return routes_; }
  const std::vector<std::string>& conflicts() const noexcept { return conflicts_; }

private:
  template <aggregate A, class C>
  router& add(std::function<std::string(const C&)> identity, std::string prefix,
              std::function<outcome<typename A::event>(const A&, const C&)> decide) {
    entry e;
    e.command_name = name_of_type<C>();
    e.aggregate_name = name_of_type<A>();
    e.identity = [identity = std::move(identity), prefix = std::move(prefix)](const void* cmd) {
      auto id = identity(*static_cast<const C*>(cmd));
      return id.empty() ? id : prefix + id; // "account-" names no account
    };
    e.setup = [](detail::app_core& core) { return detail::setup_aggregate<A>(core); };
    e.send = [decide](detail::app_core& core, std::string id, const void* cmd, const dispatch_options& opts,
                      std::chrono::steady_clock::time_point deadline, detail::done_fn done) {
      detail::send_command<A, C>(core, decide, std::move(id), *static_cast<const C*>(cmd), opts, deadline,
                                 std::move(done));
    };
    insert(std::type_index{typeid(C)}, std::move(e));
    return *this;
  }

  void insert(std::type_index key, entry e);

  std::unordered_map<std::type_index, entry> routes_;
  std::vector<std::string> conflicts_;
};

} // namespace sourcery
