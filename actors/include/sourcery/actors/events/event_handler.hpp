#pragma once

// Writing an event handler: plain C++, like an aggregate.
//
//     struct balances {
//       static constexpr const char* handler_name = "bank.balances";
//       using event = std::variant<account_opened, money_deposited>;
//
//       caf::error handle(const money_deposited& e, const sourcery::event_context& ctx) {
//         totals[std::string{ctx.aggregate_id()}] += e.amount;
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
// handler's own `on_error`) decides: retry, skip, or stop. A handler may
// instead take whole batches (`caf::error handle_batch(const
// std::vector<event_context>&)`: the batch's events of the types `event`
// lists, upcast, not decoded; a batch with none of them is not passed), or run on several threads partitioned by a
// key (`handler_options::concurrency`, `static std::string
// partition_key(const event_context&)`), keeping order within a key.
//
// `init()`, if the handler has one, runs at each (re)start, before its
// first event. It receives all of `$all`, or what `static
// sourcery::subscription subscribe_to()` (or `handler_options::subscribe_to`)
// names: one stream, or one category ("todo-": every todo's stream).

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "sourcery/actors/events/detail/partition_pool.hpp"
#include "sourcery/actors/events/event_consumer.hpp"

namespace sourcery {

/// An event handler: a name, the events it handles, and `handle` for each.
template <class H>
concept event_handler = requires {
  { H::handler_name } -> std::convertible_to<const char*>;
  typename H::event;
};

/// Runs `h.init()` when the handler has one (`void` or `caf::error`).
template <class H>
caf::error run_init(H& h) {
  if constexpr (requires { { h.init() } -> std::convertible_to<caf::error>; })
    return h.init();
  else if constexpr (requires { h.init(); })
    h.init();
  return {};
}

template <event_handler H>
error_action decide_on_error(H& h, const error_policy& policy, const caf::error& err,
                             const event_context& rec, uint32_t failures) {
  if constexpr (requires { { h.on_error(err, rec, failures) } -> std::convertible_to<error_action>; })
    return h.on_error(err, rec, failures);
  else
    return policy.decide(failures);
}

namespace detail {

/// Drives a handler: `handle` per event (or `handle_batch` per batch), on
/// one or more partitions, the checkpoint in the event store.
template <event_handler H>
class handler_consumer {
public:
  handler_consumer(std::function<std::unique_ptr<H>()> make, persistence::event_store* store,
                   const persistence::event_registry* types, error_policy policy, size_t concurrency)
    : store_(store), types_(types), policy_(policy), checkpoint_(std::string{"handler:"} + H::handler_name) {
    for (size_t i = 0; i < std::max<size_t>(1, concurrency); ++i)
      handlers_.push_back(make());
    handler_ = handlers_.front().get();
  }

  std::string name() const { return std::string{"handler "} + H::handler_name; }

  caf::expected<std::optional<uint64_t>> load_checkpoint() { return store_->load_checkpoint(checkpoint_); }

  caf::error save_checkpoint(uint64_t position) {
    auto r = store_->save_checkpoint(checkpoint_, position);
    return r ? caf::error{} : r.error();
  }

  /// Runs the handler's `init` (each partition's), if it has one.
  caf::error init() {
    for (auto& h : handlers_)
      if (auto err = run_init(*h))
        return err;
    return {};
  }

  /// Handles `batch`, the events its subscription takes of those read
  /// after `position` through `through`: all handled, the checkpoint moves
  /// to `through`.
  batch_outcome consume(const std::vector<event_context>& batch, uint64_t position, uint64_t through) {
    batch_outcome out;
    out.committed = position;
    uint64_t handled = position;
    if constexpr (requires(const std::vector<event_context>& b) {
                    { handler_->handle_batch(b) } -> std::convertible_to<caf::error>;
                  }) {
      // The handler takes the batch as a whole: it succeeds or fails as one.
      // It sees the events of the types it declares, as `handle` would.
      const auto& mine = declared_only(batch);
      caf::error err;
      if (!mine.empty()) {
        try {
          err = handler_->handle_batch(mine);
        } catch (const std::exception& e) {
          err = caf::make_error(caf::sec::runtime_error, std::string{"handle_batch threw: "} + e.what());
        }
      }
      if (err) {
        out.failed = &mine.front();
        out.error = std::move(err);
      } else {
        handled = through;
      }
    } else if (handlers_.size() == 1) {
      handled = handle_in_order(*handler_, batch, {}, out);
      if (out.failed == nullptr)
        handled = through;
    } else {
      handled = handle_partitioned(batch, position, out);
      if (out.failed == nullptr)
        handled = through;
    }
    if (handled > position) {
      if (auto err = save_checkpoint(handled)) {
        // Handled but not recorded: handled again after the retry (handlers
        // are at-least-once), the failure that came with it decided then.
        out.failed = nullptr;
        out.error = {};
        out.storage = err;
        return out;
      }
      out.committed = handled;
    }
    return out;
  }

  error_action decide(const caf::error& err, const event_context& rec, uint32_t failures) {
    return decide_on_error(*handler_, policy_, err, rec, failures);
  }

  /// Handles `rec` once more, alone (an operator retries a parked event);
  /// what `handle` throws is an error here, not a crash.
  caf::error replay(const event_context& rec) {
    if (!declared(rec.type))
      return persistence::make_error(persistence::store_errc::invalid_argument,
                                     std::string{H::handler_name} + " does not handle " + rec.type);
    try {
      return handle_one(*handler_, rec);
    } catch (const std::exception& e) {
      return caf::make_error(caf::sec::runtime_error, std::string{H::handler_name} + " threw: " + e.what());
    }
  }

private:
  caf::error handle_one(H& h, const event_context& rec) {
    caf::error err;
    visit_event<typename H::event>(*types_, rec, err, [&](const auto& ev) -> caf::error {
      if constexpr (requires { { h.handle(ev, rec) } -> std::convertible_to<caf::error>; })
        return h.handle(ev, rec);
      else if constexpr (requires { h.handle(ev, rec); }) {
        h.handle(ev, rec);
        return {};
      } else {
        return {}; // listed in `event` without a `handle`: nothing to do
      }
    });
    return err;
  }

  /// Handles `batch` (or the events `only` lists, if any) in order until the
  /// first failure, which goes to `out`. Returns the last position handled.
  uint64_t handle_in_order(H& h, const std::vector<event_context>& batch,
                           const std::vector<size_t>& only, batch_outcome& out) {
    uint64_t handled = 0;
    auto step = [&](const event_context& rec) {
      if (auto err = handle_one(h, rec)) {
        out.failed = &rec;
        out.error = std::move(err);
        return false;
      }
      handled = rec.position;
      return true;
    };
    if (only.empty()) {
      for (const auto& rec : batch)
        if (!step(rec))
          break;
    } else {
      for (auto i : only)
        if (!step(batch[i]))
          break;
    }
    return handled;
  }

  static bool declared(const std::string& type) {
    return []<class... Es>(std::type_identity<std::variant<Es...>>, const std::string& t) {
      return ((t == Es::type_name) || ...);
    }(std::type_identity<typename H::event>{}, type);
  }

  /// `batch` itself when every event's type is declared in `H::event`, else
  /// a copy of those that are (kept in a reused buffer).
  const std::vector<event_context>& declared_only(const std::vector<event_context>& batch) {
    size_t n = 0;
    for (const auto& rec : batch)
      n += declared(rec.type) ? 1 : 0;
    if (n == batch.size())
      return batch;
    declared_.clear();
    for (const auto& rec : batch)
      if (declared(rec.type))
        declared_.push_back(rec);
    return declared_;
  }

  static std::string key_of(const event_context& rec) {
    if constexpr (requires { { H::partition_key(rec) } -> std::convertible_to<std::string>; })
      return H::partition_key(rec);
    else
      return rec.stream_id;
  }

  /// One thread per partition; the batch counts as handled up to the
  /// event before the earliest failure in any partition.
  uint64_t handle_partitioned(const std::vector<event_context>& batch, uint64_t position,
                              batch_outcome& out) {
    std::vector<std::vector<size_t>> parts(handlers_.size());
    for (size_t i = 0; i < batch.size(); ++i)
      parts[std::hash<std::string>{}(key_of(batch[i])) % parts.size()].push_back(i);
    std::vector<batch_outcome> outs(parts.size());
    if (!pool_)
      pool_ = std::make_unique<partition_pool>(handlers_.size());
    pool_->run([&](size_t p) {
      if (!parts[p].empty())
        handle_in_order(*handlers_[p], batch, parts[p], outs[p]); // catches what `handle` throws
    });
    const event_context* first = nullptr;
    for (auto& o : outs)
      if (o.failed != nullptr && (first == nullptr || o.failed->position < first->position)) {
        first = o.failed;
        out.error = o.error;
      }
    out.failed = first;
    if (first == nullptr)
      return batch.empty() ? position : batch.back().position;
    return first->position - 1 > position ? first->position - 1 : position;
  }

  std::vector<std::unique_ptr<H>> handlers_;
  std::vector<event_context> declared_; // handle_batch's events, when some are not
  std::unique_ptr<partition_pool> pool_;              // partitions' threads, made at the first batch
  H* handler_;
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
                                           std::function<void(const caf::actor&)> started = {},
                                           const stream_prefixes* prefixes = nullptr) {
  using consumer = detail::handler_consumer<H>;
  detail::subscribe_as_declared<H>(options);
  std::function<std::unique_ptr<consumer>()> make_consumer = [make, store, types, policy = options.on_error,
                                                               n = options.concurrency] {
    return std::make_unique<consumer>(make, store, types, policy, n);
  };
  return consumer_child_spec<consumer>(std::string{"handler:"} + H::handler_name, std::move(make_consumer), store,
                                       std::move(status), options, std::move(started), prefixes);
}

} // namespace sourcery
