#pragma once

// Writing an LMDB projection: a read model whose writes and checkpoint
// commit in one transaction, so a crash can neither lose an event's effect
// nor apply it twice — no idempotence tricks needed.
//
//     struct balance_view {
//       static constexpr const char* projection_name = "bank.balances";
//       using event = std::variant<money_deposited, money_withdrawn>;
//
//       caf::error project(const money_deposited& e, const sourcery::event_context& ctx,
//                          sourcery::persistence::projection_store::writer& w) {
//         auto old = w.get("balances", ctx.stream_id);
//         w.put("balances", ctx.stream_id, std::to_string(std::stoll(old.value_or("0")) + e.amount));
//         return {};
//       }
//     };
//
// The projector runs as a supervised actor like an event handler, one
// transaction per batch. When `project` fails, the batch's writes are
// rolled back, the events before the failing one are committed again, and
// the error policy decides about the failing event.

#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "sourcery/actors/events/event_consumer.hpp"
#include "sourcery/actors/events/event_handler.hpp"
#include "sourcery/persistence/projection_store.hpp"
#include "sourcery/persistence/store_inspection.hpp"

namespace sourcery {

template <class P>
concept projector = requires {
  { P::projection_name } -> std::convertible_to<const char*>;
  typename P::event;
};

/// A limit for projecting "as of" a past moment: events up to a position
/// and created no later than a time (microseconds since the epoch, as
/// `recorded_event::created_at`).
struct as_of {
  uint64_t position = std::numeric_limits<uint64_t>::max();
  int64_t created_at = std::numeric_limits<int64_t>::max();

  bool includes(const persistence::recorded_event& ev) const {
    return ev.position <= position && ev.created_at <= created_at;
  }
};

/// What a rebuild of projection `P` drops besides its rows: `P::reset(writer&)`
/// when it has one (a projection that keeps SQL tables of its own empties
/// them there), run in the transaction that drops its rows and checkpoint.
template <projector P>
std::function<caf::error(persistence::projection_store::writer&)> projection_reset() {
  if constexpr (requires(persistence::projection_store::writer& w) {
                  { P::reset(w) } -> std::convertible_to<caf::error>;
                })
    return [](persistence::projection_store::writer& w) { return P::reset(w); };
  else
    return {};
}

namespace detail {

/// Drives a projector: one projection-store transaction per batch.
template <projector P>
class projector_consumer {
public:
  projector_consumer(std::unique_ptr<P> projector, persistence::projection_store* models,
                     const persistence::event_registry* types, error_policy policy, std::string instance)
    : projector_(std::move(projector)), models_(models), types_(types), policy_(policy),
      instance_(std::move(instance)) {}

  std::string name() const { return "projection " + instance_; }

  caf::expected<std::optional<uint64_t>> load_checkpoint() { return models_->checkpoint(instance_); }

  caf::error save_checkpoint(uint64_t position) {
    return models_->write(instance_, position, [](persistence::projection_store::writer&) { return caf::error{}; });
  }

  /// Runs the projector's `init()` or `init(projection_store&)` (to create
  /// its tables, say), if it has one.
  caf::error init() {
    if constexpr (requires { { projector_->init(*models_) } -> std::convertible_to<caf::error>; })
      return projector_->init(*models_);
    else
      return run_init(*projector_);
  }

  /// Projects `batch`, the events its subscription takes of those read
  /// after `position` through `through`, in one transaction that moves the
  /// checkpoint to `through`.
  batch_outcome consume(const std::vector<event_context>& batch, uint64_t position, uint64_t through) {
    batch_outcome out;
    out.committed = position;
    if (through <= position)
      return out;
    size_t failed_at = batch.size();
    caf::error failure;
    auto project_first = [&](size_t n) {
      return [&, n](persistence::projection_store::writer& w) { return project(batch, n, w, failed_at, failure); };
    };
    auto err = models_->write_after(instance_, position, through, project_first(batch.size()));
    if (!err) {
      out.committed = through;
      return out;
    }
    if (failed_at == batch.size()) { // storage, not the projector
      if (persistence::code_of(err) == persistence::store_errc::invalid_argument)
        if (auto ck = models_->checkpoint(instance_); ck && *ck && **ck != position) {
          // Another process running this projection on a shared store (two
          // applications on one PostgreSQL database, or a rebuild) got
          // there first: its writes hold these events' effects, once. Go
          // on from its checkpoint -- back to it, after a rebuild "as of"
          // an earlier moment.
          out.committed = **ck;
          out.rewound = **ck < position;
          return out;
        }
      out.storage = err; // retried later
      return out;
    }
    if (failed_at > 0) {
      size_t n = failed_at;
      if (auto again = models_->write_after(instance_, position, batch[n - 1].position, project_first(n))) {
        out.storage = again;
        return out;
      }
      out.committed = batch[n - 1].position;
    }
    out.failed = &batch[failed_at];
    out.error = failure;
    return out;
  }

  /// Projects the first `n` events of `batch` into `w`; on a failure, the
  /// event's index and error.
  caf::error project(const std::vector<event_context>& batch, size_t n, persistence::projection_store::writer& w,
                     size_t& failed_at, caf::error& failure) {
    for (size_t i = 0; i < n; ++i) {
      caf::error err;
      visit_event<typename P::event>(*types_, batch[i], err, [&](const auto& ev) -> caf::error {
        return projector_->project(ev, batch[i], w);
      });
      if (err) {
        failed_at = i;
        failure = err;
        return err;
      }
    }
    return {};
  }

  error_action decide(const caf::error& err, const event_context& rec, uint32_t failures) {
    if constexpr (requires { { projector_->on_error(err, rec, failures) } -> std::convertible_to<error_action>; })
      return projector_->on_error(err, rec, failures);
    else
      return policy_.decide(failures);
  }

private:
  std::unique_ptr<P> projector_;
  persistence::projection_store* models_;
  const persistence::event_registry* types_;
  error_policy policy_;
  std::string instance_;
};

} // namespace detail

/// The child spec of projector `P` ("projection:<name>", transient).
template <projector P>
supervision::child_spec projector_child_spec(std::function<std::unique_ptr<P>()> make, persistence::event_store* store,
                                             persistence::projection_store* models,
                                             const persistence::event_registry* types,
                                             std::shared_ptr<handler_status> status, handler_options options,
                                             std::function<void(const caf::actor&)> started = {},
                                             const stream_prefixes* prefixes = nullptr) {
  using consumer = detail::projector_consumer<P>;
  detail::subscribe_as_declared<P>(options);
  std::function<std::unique_ptr<consumer>()> make_consumer = [make, models, types, policy = options.on_error] {
    return std::make_unique<consumer>(make(), models, types, policy, P::projection_name);
  };
  return consumer_child_spec<consumer>(std::string{"projection:"} + P::projection_name, std::move(make_consumer),
                                       store, std::move(status), options, std::move(started), prefixes);
}

/// Builds projection `P` from the log into `instance`, replacing what it
/// held (projection_store::replace: on PostgreSQL in one transaction, so
/// readers see the old read model until the new one is complete and a live
/// writer of `instance` neither loses nor doubles an event), with the
/// events `limit` includes: the read model as it was at a past position or
/// time ("time travel"), or a fresh copy to compare with the live one.
/// Runs on the caller's thread. Returns the last position projected.
/// `progress` gets (position reached, head) after each batch; `prefixes`
/// give the events their aggregate's identity. Errors: the first failing
/// event's error (nothing is replaced then), store errors.
template <projector P>
caf::expected<uint64_t> project_as_of(const persistence::event_store& store, const persistence::event_registry& types,
                                      persistence::projection_store& models, const std::string& instance,
                                      as_of limit = {}, std::unique_ptr<P> fresh = std::make_unique<P>(),
                                      const persistence::progress_callback& progress = {},
                                      const stream_prefixes* prefixes = nullptr) {
  detail::projector_consumer<P> consumer{std::move(fresh), &models, &types, error_policy{}, instance};
  if (auto err = consumer.init())
    return err;
  uint64_t position = 0;
  auto build = [&](persistence::projection_store::batches& out) -> caf::error {
    position = 0;
    std::vector<event_context> batch;
    for (bool done = false; !done;) {
      auto read = store.read_all(position + 1, 1024);
      if (!read)
        return read.error();
      batch.clear();
      for (auto& ev : *read) {
        if (!limit.includes(ev)) {
          done = true;
          break;
        }
        ev.prefix_length = prefixes != nullptr ? prefixes->prefix_length(ev.stream_id) : 0;
        batch.push_back(std::move(ev));
      }
      if (read->size() < 1024)
        done = true;
      if (batch.empty())
        break;
      size_t failed_at = batch.size();
      caf::error failure;
      if (auto err = out.write(batch.back().position, [&](persistence::projection_store::writer& w) {
            return consumer.project(batch, batch.size(), w, failed_at, failure);
          }))
        return err;
      position = batch.back().position;
      if (progress)
        progress(position, store.head_position());
    }
    return {};
  };
  if (auto err = models.replace(instance, projection_reset<P>(), build))
    return err;
  if (progress)
    progress(position, position);
  return position;
}

} // namespace sourcery
