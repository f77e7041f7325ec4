#pragma once

// Writing an event handler: plain C++, like an aggregate.
//
//     struct balances {
//       static constexpr const char* handler_name = "bank.balances";
//       using event = std::variant<account_opened, money_deposited>;
//
//       caf::error handle(const money_deposited& e, const sourcery::event_context& ctx) {
//         totals[ctx.stream_id] += e.amount;
//         return {};
//       }
//       ...
//     };
//
// The handler runs as a supervised actor on a persistent position in `$all`
// (its checkpoint, saved in the event store under "handler:<handler_name>"
// after every batch), so delivery is at-least-once: after a crash the events
// since the last checkpoint come again (`ctx.position` makes handling
// idempotent). Events of types not in `event` are passed over. A `handle`
// may return an error or throw; the error policy (the options, or the
// handler's own `on_error`) decides: retry, skip, or stop.

#include <memory>
#include <string>

#include "sourcery/actors/event_consumer.hpp"

namespace sourcery {

/// An event handler: a name, the events it handles, and `handle` for each.
template <class H>
concept event_handler = requires {
  { H::handler_name } -> std::convertible_to<const char*>;
  typename H::event;
};

template <event_handler H>
error_action decide_on_error(H& h, const error_policy& policy, const caf::error& err,
                             const persistence::recorded_event& rec, uint32_t failures) {
  if constexpr (requires { { h.on_error(err, rec, failures) } -> std::convertible_to<error_action>; })
    return h.on_error(err, rec, failures);
  else
    return policy.decide(failures);
}

namespace detail {

/// Drives a handler: `handle` per event, the checkpoint in the event store.
template <event_handler H>
class handler_consumer {
public:
  handler_consumer(std::unique_ptr<H> handler, persistence::event_store* store,
                   const persistence::event_registry* types, error_policy policy)
    : handler_(std::move(handler)), store_(store), types_(types), policy_(policy),
      checkpoint_(std::string{"handler:"} + H::handler_name) {}

  std::string name() const { return std::string{"handler "} + H::handler_name; }

  caf::expected<std::optional<uint64_t>> load_checkpoint() { return store_->load_checkpoint(checkpoint_); }

  caf::error save_checkpoint(uint64_t position) {
    auto r = store_->save_checkpoint(checkpoint_, position);
    return r ? caf::error{} : r.error();
  }

  batch_outcome consume(const std::vector<persistence::recorded_event>& batch, uint64_t position) {
    batch_outcome out;
    out.committed = position;
    uint64_t handled = position;
    for (const auto& rec : batch) {
      caf::error err;
      visit_event<typename H::event>(*types_, rec, err, [&](const auto& ev) -> caf::error {
        if constexpr (requires { { handler_->handle(ev, rec) } -> std::convertible_to<caf::error>; })
          return handler_->handle(ev, rec);
        else if constexpr (requires { handler_->handle(ev, rec); }) {
          handler_->handle(ev, rec);
          return {};
        } else {
          return {}; // listed in `event` without a `handle`: nothing to do
        }
      });
      if (err) {
        out.failed = &rec;
        out.error = std::move(err);
        break;
      }
      handled = rec.position;
    }
    if (handled > position) {
      if (auto err = save_checkpoint(handled))
        consumer_crash(*this, "cannot save its checkpoint", err);
      out.committed = handled;
    }
    return out;
  }

  error_action decide(const caf::error& err, const persistence::recorded_event& rec, uint32_t failures) {
    return decide_on_error(*handler_, policy_, err, rec, failures);
  }

private:
  std::unique_ptr<H> handler_;
  persistence::event_store* store_;
  const persistence::event_registry* types_;
  error_policy policy_;
  std::string checkpoint_;
};

} // namespace detail

/// The child spec of handler `H` ("handler:<name>", transient).
template <event_handler H>
supervision::child_spec handler_child_spec(std::function<std::unique_ptr<H>()> make, persistence::event_store* store,
                                           const persistence::event_registry* types,
                                           std::shared_ptr<handler_status> status, handler_options options,
                                           std::function<void(const caf::actor&)> started = {}) {
  using consumer = detail::handler_consumer<H>;
  std::function<std::unique_ptr<consumer>()> make_consumer = [make, store, types, policy = options.on_error] {
    return std::make_unique<consumer>(make(), store, types, policy);
  };
  return consumer_child_spec<consumer>(std::string{"handler:"} + H::handler_name, std::move(make_consumer), store,
                                       std::move(status), options, std::move(started));
}

} // namespace sourcery
