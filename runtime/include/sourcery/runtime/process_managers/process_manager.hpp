#pragma once

// Writing a process manager (a saga): plain C++, like an aggregate.
//
//     struct transfer_saga {
//       static constexpr const char* process_name = "bank.transfers";
//       using event = std::variant<transfer_requested, money_withdrawn, ...>;
//
//       std::string to;                       // the instance's state,
//       MSGPACK_DEFINE_MAP(to);               // persisted between events
//
//       static sourcery::interest interested(const transfer_requested& e) { return sourcery::interest::start(e.transfer); }
//       sourcery::commands handle(const transfer_requested& e) const { return {sourcery::command(withdraw{...})}; }
//       void apply(const transfer_requested& e) { to = e.to; }
//       sourcery::commands on_rejected(const sourcery::failed_command& f, const sourcery::event_context& ctx) const;
//     };
//
// For each event it lists, `interested` says which instances (ids) it
// starts, continues or stops. An instance is an actor, opened on demand and
// passivated when idle; for each event it dispatches the commands `handle`
// returns (causation: the event, correlation: the event's), then folds the
// event into its state with `apply`. States and the process manager's
// position in `$all` are saved together in the application's read-model
// store, so after a crash an instance resumes mid-saga from the event after
// the last saved one. Commands are therefore dispatched at least once: the
// aggregates they reach should tolerate a repeat.
//
// A rejected command goes to `on_rejected`, which may return compensating
// commands (default: none, the saga goes on). A command that fails (an
// error, or no answer within the event's time) goes to `on_failure` when
// the process manager has one, which decides for that command: retry it
// (after a delay), skip it and go on with the rest, or stop. Without it, the
// error policy decides: retry (from the failed command) after a delay, skip
// the event, or stop the process manager. Commands inherit the metadata of
// the event that caused them (and its correlation id; causation: the event).

#include <any>
#include <chrono>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include <caf/all.hpp>

#include "sourcery/actors/events/event_consumer.hpp"
#include "sourcery/runtime/commands/dispatch.hpp"
#include "sourcery/runtime/commands/dispatcher.hpp"

namespace sourcery {

/// Which instances an event concerns, and how.
struct interest {
  enum class kind : uint8_t { none, start, advance, stop };
  kind what = kind::none;
  std::vector<std::string> ids;

  static interest none() { return {}; }
  static interest start(std::string id) { return {kind::start, {std::move(id)}}; }
  /// An event for running instances (ignored for an id with no instance).
  static interest advance(std::string id) { return {kind::advance, {std::move(id)}}; }
  static interest advance(std::vector<std::string> ids) { return {kind::advance, std::move(ids)}; }
  /// The instance handles the event, then ends (its state is deleted).
  static interest stop(std::string id) { return {kind::stop, {std::move(id)}}; }
};

/// A command a process manager dispatches, with its type erased.
struct process_command {
  std::string name; ///< the command type's name, for errors and logs
  std::any value;   ///< the command, for `on_rejected` to inspect
  std::function<void(dispatcher&, dispatch_options, std::function<void(caf::expected<dispatch_result>)>)> send;
};

using commands = std::vector<process_command>;

template <class C>
process_command command(C cmd);

/// A command its aggregate refused (`on_rejected`) or that failed (`on_failure`).
struct failed_command {
  std::string name;
  std::any value;
  rejection why;      ///< a rejection's
  caf::error error;   ///< a failure's: an error, or dispatch_errc::timeout
  uint32_t failures = 0; ///< a failure's: consecutive, of this command

  /// The command, if it is a `C`.
  template <class C>
  const C* as() const {
    return std::any_cast<C>(&value);
  }
};

/// What a process manager does about one of its commands that failed (an
/// error, or no answer within what was left of the event's time), from its
/// `command_decision on_failure(const failed_command&, const event_context&)`.
struct command_decision {
  enum class kind : uint8_t { retry, skip, stop };
  kind what = kind::stop;
  std::chrono::milliseconds delay{0};

  /// Send this command again after `delay` (the event gets its whole time
  /// again); the commands before it, accepted, are not sent again.
  static command_decision retry(std::chrono::milliseconds delay = {}) { return {kind::retry, delay}; }
  /// Leave this command out and go on with the event's other commands.
  static command_decision skip() { return {kind::skip, {}}; }
  /// Stop the process manager (its status says why).
  static command_decision stop() { return {kind::stop, {}}; }
};

struct process_options {
  /// Passivate an instance after this long without events (0: never).
  std::chrono::milliseconds idle_timeout{std::chrono::minutes{1}};
  /// How long an instance may take over one event: all its commands,
  /// dispatched one after the other, each within what is left of it. An
  /// event not done by then fails with dispatch_errc::timeout, and the error
  /// policy decides (a retry has the whole timeout again).
  std::chrono::milliseconds event_timeout{std::chrono::seconds{10}};
  error_policy on_error;
  handler_start start = handler_start::origin;
  uint64_t start_position = 0;
  /// Most events in flight (read, not yet saved) at once.
  size_t max_in_flight = 4096;
};

template <class P>
concept process_manager = requires {
  { P::process_name } -> std::convertible_to<const char*>;
  typename P::event;
};

} // namespace sourcery
