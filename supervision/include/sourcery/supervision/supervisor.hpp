#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/expected.hpp>
#include <caf/message.hpp>

#include "sourcery/supervision/child_spec.hpp"
#include "sourcery/supervision/error.hpp"
#include "sourcery/supervision/supervisor_flags.hpp"

namespace sourcery::supervision {

/// One row of `which_children`.
struct child_info {
  std::string id; ///< Empty for simple_one_for_one children.
  caf::actor actor; ///< Null while not running.
  child_type type = child_type::worker;
  restart_type restart = restart_type::permanent;
  uint32_t restarts = 0;
};

/// `count_children`, as OTP's.
struct child_counts {
  size_t specs = 0;
  size_t active = 0;
  size_t supervisors = 0;
  size_t workers = 0;
};

// -- the messages a supervisor understands ---------------------------------------
// Requests answered with a value or an error (caf::error with supervision_errc):
//   (start_child_atom, child_spec)       -> caf::actor      (static strategies)
//   (start_child_atom, caf::message)     -> caf::actor      (simple_one_for_one)
//   (terminate_child_atom, std::string)  -> caf::unit_t     (by id)
//   (terminate_child_atom, caf::actor)   -> caf::unit_t     (a dynamic child)
//   (restart_child_atom, std::string)    -> caf::actor
//   (delete_child_atom, std::string)     -> caf::unit_t
//   (which_children_atom)                -> std::vector<child_info>
//   (count_children_atom)                -> child_counts
//   (tree_atom)                          -> std::string
// An exit message (exit_reason::user_shutdown) stops it in order.

using start_child_atom = caf::atom_constant<caf::atom("startchild")>;
using terminate_child_atom = caf::atom_constant<caf::atom("termchild")>;
using restart_child_atom = caf::atom_constant<caf::atom("rstchild")>;
using delete_child_atom = caf::atom_constant<caf::atom("delchild")>;
using which_children_atom = caf::atom_constant<caf::atom("whichchild")>;
using count_children_atom = caf::atom_constant<caf::atom("countchild")>;
using tree_atom = caf::atom_constant<caf::atom("tree")>;

/// Spawns a supervisor without waiting: it starts its children in order when
/// it first runs, and exits with the start error if one fails. Use inside
/// start functions (a child supervisor) and other actors.
caf::actor spawn_supervisor(caf::actor_system& system, supervisor_flags flags, std::vector<child_spec> children);

/// A start function spawning the function-based actor `fun` (a worker).
template <class F>
start_function spawn_fun(F fun) {
  return [fun](caf::actor_system& sys, const caf::message&) -> caf::expected<caf::actor> {
    return caf::actor{sys.spawn(fun)};
  };
}

/// A start function for a child supervisor.
start_function supervisor_start(supervisor_flags flags, std::vector<child_spec> children);

/// Blocking control of a supervisor from a thread that is not an actor (a
/// `main`, a test, an embedding server). Inside actors, send the messages.
class supervisor {
public:
  /// Spawns a supervisor and waits until all its children have started.
  /// Errors: invalid flags or specs, the first start failure.
  static caf::expected<supervisor> start(caf::actor_system& system, supervisor_flags flags,
                                         std::vector<child_spec> children);

  supervisor(caf::actor_system& system, caf::actor handle);

  const caf::actor& handle() const noexcept { return handle_; }

  caf::expected<caf::actor> start_child(child_spec spec);
  caf::expected<caf::actor> start_child(caf::message args);
  caf::expected<void> terminate_child(const std::string& id);
  caf::expected<void> terminate_child(const caf::actor& child);
  caf::expected<caf::actor> restart_child(const std::string& id);
  caf::expected<void> delete_child(const std::string& id);
  caf::expected<std::vector<child_info>> which_children();
  caf::expected<child_counts> count_children();
  /// The tree below this supervisor, for humans.
  caf::expected<std::string> tree();

  /// Stops the tree in order (children in reverse start order, each with its
  /// shutdown policy) and waits until the supervisor has exited.
  void stop(std::chrono::milliseconds timeout = std::chrono::seconds{60});

private:
  caf::actor_system* system_;
  caf::actor handle_;
};

} // namespace sourcery::supervision

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sourcery::supervision::child_spec)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sourcery::supervision::child_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<sourcery::supervision::child_info>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sourcery::supervision::child_counts)
