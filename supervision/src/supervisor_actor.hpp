#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <unordered_map>
#include <vector>

#include <caf/actor_clock.hpp>
#include <caf/event_based_actor.hpp>

#include "sourcery/supervision/supervisor.hpp"

namespace sourcery::supervision::detail {

using started_atom = caf::atom_constant<caf::atom("sv_started")>;
using retry_atom = caf::atom_constant<caf::atom("sv_retry")>;
using backoff_atom = caf::atom_constant<caf::atom("sv_backoff")>;
using kill_timer_atom = caf::atom_constant<caf::atom("sv_killtmr")>;
using finish_atom = caf::atom_constant<caf::atom("sv_finish")>;

/// The supervisor: OTP's supervisor.erl on a CAF event-based actor.
///
/// It monitors its children and takes them down when it terminates (the
/// effect of OTP's links without CAF's kill propagation). Terminating children is
/// asynchronous (send the exit, wait for the child's exit message or a kill
/// timer), so while it stops children for a restart or a request it is
/// *busy*: further child exits and control requests wait in queues and are
/// handled, in arrival order, when it is idle again. An exit from anyone who
/// is not a child (its parent) shuts the supervisor down in order.
class supervisor_actor : public caf::event_based_actor {
public:
  supervisor_actor(caf::actor_config& cfg, supervisor_flags flags, std::vector<child_spec> specs);

  caf::behavior make_behavior() override;

  const char* name() const override { return "supervisor"; }

private:
  struct child {
    uint64_t serial = 0;
    const child_spec* spec = nullptr; // owned by specs_
    caf::actor handle;         // null while not running
    caf::message args;         // simple_one_for_one arguments
    uint32_t restarts = 0;     // total, for introspection
    uint32_t consecutive = 0;  // for backoff
    caf::actor_clock::time_point started_at;
    uint64_t stop_epoch = 0;   // matches kill timers to stops
    bool stopping = false;     // we asked it to terminate
    bool pending_start = false; // to be (re)started by a group restart
    bool waiting = false;      // a backoff or retry restart is scheduled
    bool dynamic = false;
  };

  // -- children ----------------------------------------------------------------
  child* find(uint64_t serial);
  child* find_static(const std::string& id);
  const child_spec* own_spec(child_spec spec);
  child& add_child(const child_spec* spec, caf::message args, bool dynamic);
  void remove_child(uint64_t serial);
  caf::error start_child_process(child& c);
  std::vector<uint64_t> running_statics_reversed(size_t from_index) const;

  // -- failures and restarts ---------------------------------------------------
  void on_child_down(const caf::actor_addr& who, const caf::error& reason);
  void handle_child_exit(uint64_t serial, const caf::error& reason);
  bool record_restart();
  void report(supervisor_report::kind what, const child& c, const caf::error& reason);
  void restart(child& c);
  void restart_now(child& c);
  void start_pending_group();
  void on_retry(uint64_t serial);

  // -- stopping children -------------------------------------------------------
  void stop_children(std::vector<uint64_t> order, bool parallel, std::function<void()> then);
  void stop_next();
  void stop_one(child& c);
  void on_stopped(child& c);

  // -- shutdown ----------------------------------------------------------------
  void begin_shutdown(caf::error reason);
  void drain();
  void defer(std::function<void()> request);

  // -- requests ----------------------------------------------------------------
  /// Answers a request about static child `id` once the supervisor is idle:
  /// errors for shutdown, an unknown id, or (if `must_be_stopped`) a running
  /// child; otherwise `f` answers.
  caf::response_promise when_idle_with(const std::string& id, bool must_be_stopped,
                                       std::function<void(child&, caf::response_promise&)> f);
  void do_start_child(child_spec spec, caf::response_promise rp);
  void do_start_dynamic(caf::message args, caf::response_promise rp);
  void do_terminate(uint64_t serial, caf::response_promise rp);
  std::vector<child_info> which_children() const;
  child_counts count_children() const;
  void render_tree(caf::response_promise rp);

  supervisor_flags flags_;
  std::vector<child_spec> initial_specs_;
  std::deque<child_spec> specs_;          // stable addresses; a deleted child's spec stays (rare)
  const child_spec* template_ = nullptr;  // simple_one_for_one
  std::unordered_map<uint64_t, child> children_; // node-based: references stay valid
  std::vector<uint64_t> static_order_; // start order
  std::unordered_map<caf::actor_addr, uint64_t> by_addr_;
  uint64_t next_serial_ = 1;
  uint64_t next_epoch_ = 1;
  std::deque<caf::actor_clock::time_point> restart_times_;
  std::mt19937_64 rng_;

  bool busy_ = false;
  std::vector<uint64_t> stop_queue_;
  size_t stop_waiting_ = 0;
  bool stop_parallel_ = false;
  std::function<void()> stop_then_;
  std::deque<std::pair<uint64_t, caf::error>> pending_exits_;
  std::deque<std::function<void()>> deferred_;

  bool shutting_down_ = false;
  bool finishing_ = false;
  caf::error exit_reason_;
  caf::error init_error_;
};

} // namespace sourcery::supervision::detail
