#pragma once

// Which aggregate handles a command, and which instance. Declared once per
// aggregate (Commanded's `identify` + `dispatch`):
//
//     sourcery::router r;
//     r.aggregate<todo>([](const auto& c) { return c.id; }, "todo-")
//      .dispatch<create_todo, update_todo, delete_todo>();
//
// The identity is a function of any of the aggregate's commands (a generic
// lambda reads the same field of each); the stream id is `prefix + identity`,
// and an empty identity is refused. Settings (lifespan, snapshots, retries,
// default timeout and consistency) go in the same declaration. Routes are
// keyed by command type name: what the router keeps is what it takes to turn
// a command into an envelope (identity, msgpack encoding) and, on the
// aggregate's side, an envelope back into an `execute` call.

#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <string_view>
#include <typeindex>
#include <unordered_map>
#include <vector>

#include "sourcery/actors/aggregates/aggregate.hpp"
#include "sourcery/actors/aggregates/aggregate_settings.hpp"
#include "sourcery/actors/aggregates/detail/aggregate_host.hpp"

namespace sourcery {

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

/// `name_of_type<T>()`, computed once.
template <class T>
const std::string& type_name_of() {
  static const std::string name = name_of_type<T>();
  return name;
}

namespace detail {

/// An aggregate type as declared: what the runtime needs to host it.
struct aggregate_declaration {
  std::string name;
  std::type_index type = typeid(void);
  std::string prefix; ///< of its stream ids
  aggregate_settings settings;
  std::function<caf::error(persistence::event_registry&)> register_events;
  std::function<std::unique_ptr<aggregate_host>(const aggregate_settings&, persistence::event_store&,
                                                const persistence::event_registry&)>
    make_host;
};

/// One command type's route.
struct command_route {
  std::type_index type = typeid(void);
  std::string command_name;
  std::string aggregate_name;
  std::string prefix;
  /// The command's identity (without the prefix).
  std::function<std::string(const void*)> identity;
  std::function<persistence::bytes(const void*)> encode;
  /// Adds the command's executor to its aggregate's host.
  std::function<void(aggregate_host&)> install;
};

} // namespace detail

class router {
public:
  /// The routes of one aggregate type, declared with its identity.
  template <sourcery::aggregate A, class Identity>
  class aggregate_routes {
  public:
    aggregate_routes(router& r, Identity identity) : router_(r), identity_(std::move(identity)) {}

    /// Commands `Cs` go to `A::execute(const C&)`.
    template <class... Cs>
    aggregate_routes& dispatch() {
      (add<Cs>([](const A& a, const Cs& c) -> outcome<typename A::event> { return a.execute(c); }), ...);
      return *this;
    }

    /// Command `C` goes to `handler(const A&, const C&) -> outcome` instead
    /// of an `execute` of the aggregate's.
    template <class C, class Handler>
      requires std::is_invocable_r_v<outcome<typename A::event>, Handler, const A&, const C&>
    aggregate_routes& handle(Handler handler) {
      return add<C>(std::move(handler));
    }

  private:
    template <class C, class Decide>
    aggregate_routes& add(Decide decide) {
      static_assert(std::is_invocable_r_v<std::string, const Identity&, const C&>,
                    "the aggregate's identity function must take each of its commands");
      auto& prefix = router_.aggregates_.at(type_name_of<A>()).prefix;
      router_.add_command<A, C>([id = identity_](const C& c) { return std::string{id(c)}; }, prefix,
                                std::move(decide));
      return *this;
    }

    router& router_;
    Identity identity_;
  };

  /// Declares aggregate `A`: `identity(cmd)` names the instance of each of
  /// its commands (its stream: `prefix + identity`), `settings` how it
  /// runs. Declaring a type twice is an error reported when the
  /// application starts.
  template <sourcery::aggregate A, class Identity>
  aggregate_routes<A, Identity> aggregate(Identity identity, std::string prefix = {},
                                          aggregate_settings settings = {}) {
    declare<A>(std::move(prefix), std::move(settings), true);
    return aggregate_routes<A, Identity>{*this, std::move(identity)};
  }

  // -- one command at a time (the first API; the identity per command) ---------

  /// Commands `C` go to aggregate `A`'s `execute(const C&)`, instance
  /// `prefix + identity(cmd)`.
  template <sourcery::aggregate A, class C>
    requires executes<A, C>
  router& route(std::function<std::string(const C&)> identity, std::string prefix = {}) {
    declare<A>(prefix, {}, false);
    add_command<A, C>(std::move(identity), prefix,
                      [](const A& a, const C& c) -> outcome<typename A::event> { return a.execute(c); });
    return *this;
  }

  /// The identity is the field `field` of the command.
  template <sourcery::aggregate A, class C>
    requires executes<A, C>
  router& route(std::string C::*field, std::string prefix = {}) {
    return route<A, C>([field](const C& c) { return c.*field; }, std::move(prefix));
  }

  /// A command handler `handler(const A&, const C&) -> outcome` instead of `execute`.
  template <sourcery::aggregate A, class C, class Handler>
    requires std::is_invocable_r_v<outcome<typename A::event>, Handler, const A&, const C&>
  router& route(std::string C::*field, Handler handler, std::string prefix = {}) {
    declare<A>(prefix, {}, false);
    add_command<A, C>([field](const C& c) { return c.*field; }, prefix, std::move(handler));
    return *this;
  }

  /// Takes every route of `other`. A command type routed twice is an error
  /// reported when the application starts.
  router& include(const router& other);

  /// The route of a command type by name, or nullptr.
  const detail::command_route* find(std::string_view command_name) const;
  const std::map<std::string, detail::aggregate_declaration>& aggregates() const noexcept { return aggregates_; }
  const std::map<std::string, detail::command_route, std::less<>>& commands() const noexcept { return commands_; }
  const std::vector<std::string>& conflicts() const noexcept { return conflicts_; }

private:
  template <sourcery::aggregate A>
  void declare(std::string prefix, aggregate_settings settings, bool explicitly) {
    const auto& name = type_name_of<A>();
    if (auto i = aggregates_.find(name); i != aggregates_.end()) {
      if (i->second.type != std::type_index{typeid(A)})
        conflicts_.push_back("two aggregate types are named " + name);
      else if (explicitly && declared_.count(name) != 0)
        conflicts_.push_back("aggregate " + name + " is declared twice");
      else if (explicitly) {
        i->second.prefix = std::move(prefix);
        i->second.settings = std::move(settings);
      }
      if (explicitly)
        declared_.insert(name);
      return;
    }
    detail::aggregate_declaration d;
    d.name = name;
    d.type = typeid(A);
    d.prefix = std::move(prefix);
    d.settings = std::move(settings);
    d.register_events = [](persistence::event_registry& types) { return register_events<A>(types); };
    d.make_host = [name](const aggregate_settings& s, persistence::event_store& store,
                         const persistence::event_registry& types) -> std::unique_ptr<detail::aggregate_host> {
      return std::make_unique<detail::aggregate_host_of<A>>(name, s, store, types);
    };
    aggregates_.emplace(name, std::move(d));
    if (explicitly)
      declared_.insert(name);
  }

  template <sourcery::aggregate A, class C, class Decide>
  void add_command(std::function<std::string(const C&)> identity, std::string prefix, Decide decide) {
    static_assert(requires(const C& c, msgpack::packer<msgpack::sbuffer>& pk) { c.msgpack_pack(pk); },
                  "a command is data: give it SOURCERY_FIELDS(...) (or MSGPACK_DEFINE_MAP) over its fields");
    detail::command_route r;
    r.type = typeid(C);
    r.command_name = type_name_of<C>();
    r.aggregate_name = type_name_of<A>();
    r.prefix = std::move(prefix);
    r.identity = [identity = std::move(identity)](const void* cmd) { return identity(*static_cast<const C*>(cmd)); };
    r.encode = [](const void* cmd) { return encode_command(*static_cast<const C*>(cmd)); };
    r.install = [name = r.command_name, decide = std::move(decide)](detail::aggregate_host& host) {
      static_cast<detail::aggregate_host_of<A>&>(host).add(name, detail::executor_for<A, C>(name, decide));
    };
    insert(std::move(r));
  }

  void insert(detail::command_route r);

  std::map<std::string, detail::aggregate_declaration> aggregates_;
  std::set<std::string> declared_;
  std::map<std::string, detail::command_route, std::less<>> commands_;
  std::vector<std::string> conflicts_;
};

} // namespace sourcery
