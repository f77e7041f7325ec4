#include "sourcery/runtime/commands/middleware.hpp"

namespace sourcery {

middleware::~middleware() = default;

caf::error middleware::before_dispatch(dispatch_context&) {
  return {};
}

void middleware::after_dispatch(const dispatch_context&, const dispatch_result&) {}

void middleware::after_failure(const dispatch_context&, const caf::error&) {}

logging_middleware::logging_middleware(std::function<void(const std::string&)> sink) : sink_(std::move(sink)) {}

caf::error logging_middleware::before_dispatch(dispatch_context& ctx) {
  sink_("dispatch " + ctx.command_name + " to " + ctx.aggregate_id + " (correlation " + ctx.options.correlation_id + ")");
  return {};
}

void logging_middleware::after_dispatch(const dispatch_context& ctx, const dispatch_result& r) {
  if (r.accepted)
    sink_("accepted " + ctx.command_name + " by " + ctx.aggregate_id + " at version " + std::to_string(r.version));
  else
    sink_("rejected " + ctx.command_name + " by " + ctx.aggregate_id + ": " + r.why.reason
          + (r.why.message.empty() ? "" : " (" + r.why.message + ")"));
}

void logging_middleware::after_failure(const dispatch_context& ctx, const caf::error& err) {
  sink_("failed " + ctx.command_name + " for " + ctx.aggregate_id + ": " + describe_error(err));
}

caf::error validation_middleware::before_dispatch(dispatch_context& ctx) {
  auto i = checks_.find(ctx.command_type);
  if (i == checks_.end())
    return {};
  if (auto problem = i->second(ctx.command))
    return make_error(dispatch_errc::halted, "invalid " + ctx.command_name + ": " + *problem);
  return {};
}

} // namespace sourcery
