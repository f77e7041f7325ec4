#pragma once

// A process manager's type, erased: what the actors behind every process
// manager (process_manager_actors.cpp) need of the user's `P`. The actors
// are compiled once, in the runtime; only this thin adapter is a template.

#include <memory>
#include <optional>
#include <string>

#include <msgpack.hpp>

#include "sourcery/persistence/map_fields.hpp"
#include "sourcery/runtime/process_managers/process_manager.hpp"

namespace sourcery::detail {

/// One instance's process: its state and its calls, `P`'s erased.
/// `handle` and `apply` visit the event as `P::event` lists it: an event
/// of another type is handled as no commands; errors of decoding, and
/// exceptions `P` throws, go to `err` (or the returned error).
class process_model {
public:
  virtual ~process_model() = default;
  virtual commands handle(const persistence::event_registry& types, const event_context& rec, caf::error& err) = 0;
  virtual caf::error apply(const persistence::event_registry& types, const event_context& rec) = 0;
  /// The state, msgpack as `P` defines it.
  virtual std::string pack() const = 0;
  /// `P::on_error`, if it has one.
  virtual std::optional<error_action> on_error(const caf::error& err, const event_context& rec, uint32_t failures) = 0;
  virtual bool has_on_failure() const = 0;
  /// `P::on_failure` (only when `has_on_failure()`); throws what it throws.
  virtual command_decision on_failure(const failed_command& f, const event_context& rec) = 0;
  /// `P::on_rejected`, if it has one (none: no commands); throws what it throws.
  virtual commands on_rejected(const failed_command& f, const event_context& rec) const = 0;
};

/// What the router needs of `P`, and how it opens an instance.
struct process_type {
  const char* name = "";
  /// `P::interested` for the event, if `P` lists its type.
  interest (*interested)(const persistence::event_registry& types, const persistence::recorded_event& rec,
                         caf::error& err) = nullptr;
  /// An instance from its saved state ("" : a new one); throws if it does not decode.
  std::unique_ptr<process_model> (*open)(const std::string& state) = nullptr;
  /// `P{}.on_error` for an event the router cannot decode, if `P` has one.
  std::optional<error_action> (*on_undecodable)(const caf::error& err, const persistence::recorded_event& rec,
                                                uint32_t failures) = nullptr;
};

template <process_manager P>
class process_model_of final : public process_model {
public:
  explicit process_model_of(P process) : process_(std::move(process)) {}

  commands handle(const persistence::event_registry& types, const event_context& rec, caf::error& err) override {
    commands out;
    visit_event<typename P::event>(types, rec, err, [&](const auto& ev) -> caf::error {
      if constexpr (requires { { process_.handle(ev, rec) } -> std::convertible_to<commands>; })
        out = process_.handle(ev, rec);
      else if constexpr (requires { { process_.handle(ev) } -> std::convertible_to<commands>; })
        out = process_.handle(ev);
      return {};
    });
    return out;
  }

  caf::error apply(const persistence::event_registry& types, const event_context& rec) override {
    caf::error err;
    visit_event<typename P::event>(types, rec, err, [&](const auto& ev) -> caf::error {
      if constexpr (requires { process_.apply(ev); })
        process_.apply(ev);
      return {};
    });
    return err;
  }

  std::string pack() const override {
    msgpack::sbuffer buf;
    msgpack::pack(buf, process_);
    return {buf.data(), buf.size()};
  }

  std::optional<error_action> on_error(const caf::error& err, const event_context& rec, uint32_t failures) override {
    if constexpr (requires(P& p) { { p.on_error(err, rec, uint32_t{}) } -> std::convertible_to<error_action>; })
      return process_.on_error(err, rec, failures);
    else
      return std::nullopt;
  }

  bool has_on_failure() const override {
    return requires(P& p, const failed_command& f, const event_context& c) {
      { p.on_failure(f, c) } -> std::convertible_to<command_decision>;
    };
  }

  command_decision on_failure(const failed_command& f, const event_context& rec) override {
    if constexpr (requires(P& p) { { p.on_failure(f, rec) } -> std::convertible_to<command_decision>; })
      return process_.on_failure(f, rec);
    else
      return command_decision::stop();
  }

  commands on_rejected(const failed_command& f, const event_context& rec) const override {
    if constexpr (requires(const P& p) { { p.on_rejected(f, rec) } -> std::convertible_to<commands>; })
      return process_.on_rejected(f, rec);
    else
      return {};
  }

  static std::unique_ptr<process_model> open(const std::string& state) {
    P process{};
    if (!state.empty()) {
      auto oh = msgpack::unpack(state.data(), state.size());
      persistence::convert_map(oh.get(), process);
    }
    return std::make_unique<process_model_of>(std::move(process));
  }

  static interest interested(const persistence::event_registry& types, const persistence::recorded_event& rec,
                             caf::error& err) {
    interest out;
    visit_event<typename P::event>(types, rec, err, [&](const auto& ev) -> caf::error {
      if constexpr (requires { { P::interested(ev) } -> std::convertible_to<interest>; })
        out = P::interested(ev);
      return {};
    });
    return out;
  }

  static std::optional<error_action> on_undecodable(const caf::error& err, const persistence::recorded_event& rec,
                                                    uint32_t failures) {
    if constexpr (requires(P& p) { { p.on_error(err, rec, uint32_t{}) } -> std::convertible_to<error_action>; })
      return P{}.on_error(err, rec, failures);
    else
      return std::nullopt;
  }

private:
  P process_;
};

template <process_manager P>
const process_type* process_type_of() {
  static const process_type type{P::process_name, &process_model_of<P>::interested, &process_model_of<P>::open,
                                 &process_model_of<P>::on_undecodable};
  return &type;
}

} // namespace sourcery::detail
