#pragma once

// The bank's read model: each account's balance and the number of settled
// transfers, as an LMDB projection (rows and checkpoint in one transaction).

#include <cstdint>
#include <string>
#include <variant>

#include "bank.hpp"
#include "sourcery/actors/events/projector.hpp"

namespace bank {

struct balances {
  static constexpr const char* projection_name = "bank.balances";
  using event = std::variant<money_deposited, money_withdrawn, transfer_completed, transfer_failed>;
  using writer = sourcery::persistence::projection_store::writer;

  caf::error project(const money_deposited& e, const sourcery::event_context& ctx, writer& w) {
    return add(w, "balances", ctx.stream_id, e.amount);
  }
  caf::error project(const money_withdrawn& e, const sourcery::event_context& ctx, writer& w) {
    return add(w, "balances", ctx.stream_id, -e.amount);
  }
  caf::error project(const transfer_completed&, const sourcery::event_context&, writer& w) {
    return add(w, "transfers", "completed", 1);
  }
  caf::error project(const transfer_failed&, const sourcery::event_context&, writer& w) {
    return add(w, "transfers", "failed", 1);
  }

  static caf::error add(writer& w, std::string_view table, std::string_view key, int64_t delta) {
    auto old = w.get(table, key);
    w.put(table, key, std::to_string((old ? std::stoll(*old) : 0) + delta));
    return {};
  }
};

} // namespace bank
