#pragma once

// What process managers, HTTP routes and host programs dispatch through.
// `application` is one; a test may stand in its own.

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <typeindex>

#include <caf/expected.hpp>

#include "sourcery/runtime/commands/dispatch.hpp"
#include "sourcery/runtime/commands/router.hpp"

namespace sourcery {

class dispatcher {
public:
  using reply = std::function<void(caf::expected<dispatch_result>)>;

  virtual ~dispatcher();

  /// Dispatches from any thread, blocking until the answer or the timeout.
  /// A rejection is a result (`accepted == false`), not an error.
  /// Errors: unregistered_command, halted, invalid_aggregate_identity,
  /// timeout, consistency_timeout, stopped, unavailable, store errors.
  template <class C>
  caf::expected<dispatch_result> dispatch(const C& cmd, dispatch_options options = {}) {
    auto promise = std::make_shared<std::promise<caf::expected<dispatch_result>>>();
    auto future = promise->get_future();
    auto budget = submit(typed_command{typeid(C), type_name_of<C>(), &cmd}, std::move(options),
                         [promise](caf::expected<dispatch_result> r) { promise->set_value(std::move(r)); });
    // The deadline answers first; this is a backstop should it not.
    if (future.wait_for(budget + std::chrono::seconds{1}) != std::future_status::ready)
      return late_timeout(budget);
    return future.get();
  }

  /// Dispatches without blocking (from inside actors too): `done` is called
  /// exactly once, on some thread of the application, within the timeout
  /// (plus the consistency timeout for a strong dispatch). An exception
  /// thrown by `done` is logged and dropped.
  template <class C>
  void dispatch_async(const C& cmd, dispatch_options options, reply done) {
    submit(typed_command{typeid(C), type_name_of<C>(), &cmd}, std::move(options), std::move(done));
  }

protected:
  /// A command with its type, valid for the duration of `submit`.
  struct typed_command {
    std::type_index type;
    const std::string& name;
    const void* command;
  };

  /// Routes the command; returns how long its answer may take at most (the
  /// timeout, plus the consistency timeout of a strong dispatch).
  virtual std::chrono::milliseconds submit(const typed_command& cmd, dispatch_options options, reply done) = 0;
  /// The error of a blocking dispatch whose answer never came.
  virtual caf::error late_timeout(std::chrono::milliseconds waited);
};

} // namespace sourcery
