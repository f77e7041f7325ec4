// The dispatch pipeline: a typed command to its route, through the
// middleware, to an envelope the registration routes; answered once, by the
// aggregate or the deadline, counted and logged when slow.

#include "sourcery/runtime/application.hpp"

#include "../commands/dispatch_deadlines.hpp"
#include "sourcery/persistence/uuid.hpp"

namespace sourcery {

std::chrono::milliseconds application::submit(const typed_command& cmd, dispatch_options options, reply done) {
  const auto t0 = std::chrono::steady_clock::now();
  auto budget = options.timeout.value_or(std::chrono::milliseconds{5000});
  if (stopped_.load()) {
    finish(t0, make_error(dispatch_errc::stopped, "the application has stopped"), done);
    return budget;
  }
  if (failed_.load()) {
    finish(t0, failure(), done);
    return budget;
  }
  auto found = routes_.find(cmd.name);
  if (found == routes_.end() || found->second.route->type != cmd.type) {
    finish(t0, make_error(dispatch_errc::unregistered_command,
                          found == routes_.end() ? "no route for command " + cmd.name
                                                 : "the route named " + cmd.name + " is another C++ type's"),
           done);
    return budget;
  }
  const auto& route = *found->second.route;
  const auto& settings = *found->second.settings;
  auto id = route.identity(cmd.command);
  if (id.empty()) {
    finish(t0, make_error(dispatch_errc::invalid_identity, route.command_name + " names no aggregate: its identity is empty"),
           done);
    return budget;
  }
  // Options and context live until the answer: after-hooks see them too.
  auto opts = std::make_shared<dispatch_options>(std::move(options));
  if (!opts->timeout)
    opts->timeout = settings.timeout;
  if (!opts->consistency_level)
    opts->consistency_level = settings.consistency_level;
  if (opts->correlation_id.empty())
    opts->correlation_id = persistence::uuid::random().to_string();
  const auto timeout = *opts->timeout;
  budget = timeout + (*opts->consistency_level == consistency::strong ? opts->consistency_timeout
                                                                        : std::chrono::milliseconds{0});
  auto ctx = std::make_shared<dispatch_context>(
    dispatch_context{cmd.type, route.command_name, route.prefix + id, cmd.command, *opts});
  for (auto& m : middleware_) {
    if (auto err = m->before_dispatch(*ctx)) {
      for (auto i = middleware_.rbegin(); i != middleware_.rend(); ++i)
        (*i)->after_failure(*ctx, err);
      finish(t0, std::move(err), done, ctx.get());
      return budget;
    }
  }
  command_envelope envelope;
  envelope.aggregate_type = route.aggregate_name;
  envelope.stream_id = ctx->aggregate_id;
  envelope.command_type = route.command_name;
  envelope.payload = route.encode(cmd.command);
  envelope.metadata = opts->metadata.encode();
  envelope.causation_id = opts->causation_id;
  envelope.correlation_id = opts->correlation_id;
  envelope.returns = opts->returns;
  envelope.deadline = detail::dispatch_deadlines::due(t0, timeout);
  ctx->command = nullptr; // the command object does not outlive this call
  // Answered once: by the aggregate, or by the deadline (then the late
  // answer is dropped). Both paths run the after-hooks.
  auto answer = std::make_shared<reply>(std::move(done));
  auto after = [this, ctx](const caf::expected<dispatch_result>& r) {
    for (auto i = middleware_.rbegin(); i != middleware_.rend(); ++i) {
      if (r)
        (*i)->after_dispatch(*ctx, *r);
      else
        (*i)->after_failure(*ctx, r.error());
    }
  };
  auto ticket = deadlines_->add(t0, timeout, [this, ctx, t0, timeout, answer, after] {
    caf::expected<dispatch_result> r = make_error(
      dispatch_errc::timeout, ctx->command_name + " to " + ctx->aggregate_id + ": no answer within "
                                + std::to_string(timeout.count()) + " ms (it may still complete)");
    after(r);
    finish(t0, std::move(r), *answer, ctx.get());
  });
  registration_->route(std::move(envelope), [this, ctx, opts, t0, answer, after, ticket](caf::expected<dispatch_result> r) {
    if (!deadlines_->settle(ticket))
      return; // answered `timeout` already
    if (r)
      r->aggregate_id = ctx->aggregate_id;
    after(r);
    complete_strong(opts, std::move(r), std::move(*answer), t0, ctx);
  });
  return budget;
}

void application::finish(std::chrono::steady_clock::time_point t0, caf::expected<dispatch_result> r,
                         const std::function<void(caf::expected<dispatch_result>)>& done,
                         const dispatch_context* ctx) {
  auto took = std::chrono::steady_clock::now() - t0;
  metrics_.command_done(r, took);
  if (took >= slow_command_ && logger_->enabled(log_level::warn, "dispatch")) {
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(took).count();
    logger_->warn("dispatch", "slow command",
                  {{"command", ctx != nullptr ? ctx->command_name : std::string{"?"}},
                   {"aggregate", ctx != nullptr ? ctx->aggregate_id : std::string{}},
                   {"duration_ms", static_cast<double>(micros) / 1000.0},
                   {"outcome", !r ? describe_error(r.error()) : r->accepted ? "accepted" : "rejected"}});
  }
  // The caller's code runs on our threads (actors, the deadline thread): its
  // bug must not take an actor, and with it the tree, down.
  std::string what;
  try {
    done(std::move(r));
    return;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "a non-standard exception";
  }
  logger_->error("dispatch", "a dispatch callback threw",
                 {{"command", ctx != nullptr ? ctx->command_name : std::string{"?"}}, {"error", what}});
}

caf::error application::late_timeout(std::chrono::milliseconds waited) {
  auto err = make_error(dispatch_errc::timeout, "no answer within " + std::to_string(waited.count()) + " ms");
  metrics_.command_done(err, waited);
  return err;
}

} // namespace sourcery
