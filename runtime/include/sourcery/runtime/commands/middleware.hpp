#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <typeindex>
#include <unordered_map>

#include <caf/error.hpp>

#include "sourcery/runtime/commands/dispatch.hpp"

namespace sourcery {

/// What middleware sees of a command on its way.
struct dispatch_context {
  std::type_index command_type;
  std::string command_name;
  std::string aggregate_id;
  const void* command = nullptr; ///< the command object; cast with `command_as<C>()`
  dispatch_options& options;     ///< may be changed before dispatch (metadata, ids)

  template <class C>
  const C* command_as() const {
    return command_type == std::type_index{typeid(C)} ? static_cast<const C*>(command) : nullptr;
  }
};

/// Runs around every dispatch, in registration order (after hooks in reverse).
/// Hooks run on the dispatching thread (before) and on an actor's thread
/// (after): keep them short and thread-safe.
class middleware {
public:
  virtual ~middleware();
  /// Return an error to halt the command (it then never reaches its aggregate).
  virtual caf::error before_dispatch(dispatch_context& ctx);
  virtual void after_dispatch(const dispatch_context& ctx, const dispatch_result& result);
  virtual void after_failure(const dispatch_context& ctx, const caf::error& err);
};

/// Writes one line per command and outcome to `sink`.
class logging_middleware : public middleware {
public:
  explicit logging_middleware(std::function<void(const std::string&)> sink);
  caf::error before_dispatch(dispatch_context& ctx) override;
  void after_dispatch(const dispatch_context& ctx, const dispatch_result& result) override;
  void after_failure(const dispatch_context& ctx, const caf::error& err) override;

private:
  std::function<void(const std::string&)> sink_;
};

/// Refuses commands that fail their validator, before any aggregate sees them.
class validation_middleware : public middleware {
public:
  /// `check` returns a description of what is wrong, or nullopt.
  template <class C>
  validation_middleware& add(std::function<std::optional<std::string>(const C&)> check) {
    checks_[std::type_index{typeid(C)}] = [check](const void* cmd) { return check(*static_cast<const C*>(cmd)); };
    return *this;
  }
  caf::error before_dispatch(dispatch_context& ctx) override;

private:
  std::unordered_map<std::type_index, std::function<std::optional<std::string>(const void*)>> checks_;
};

} // namespace sourcery
