#pragma once

// The money-transfer process manager: withdraw from the source account,
// then deposit into the target, then complete the transfer. A refused
// withdrawal fails the transfer; a refused deposit refunds the source and
// fails the transfer (compensation).

#include <cstdint>
#include <string>
#include <variant>

#include "bank.hpp"
#include "sourcery/runtime/application.hpp"

namespace bank {

struct transfer_saga {
  static constexpr const char* process_name = "bank.transfers";
  using event = std::variant<transfer_requested, money_withdrawn, money_deposited, transfer_completed, transfer_failed>;

  std::string transfer, from, to;
  int64_t amount = 0;
  MSGPACK_DEFINE_MAP(transfer, from, to, amount);

  static sourcery::interest interested(const transfer_requested& e) { return sourcery::interest::start(e.transfer); }
  static sourcery::interest interested(const money_withdrawn& e) { return part_of(e.transfer); }
  static sourcery::interest interested(const money_deposited& e) { return part_of(e.transfer); }
  static sourcery::interest interested(const transfer_completed& e) { return sourcery::interest::stop(e.transfer); }
  static sourcery::interest interested(const transfer_failed& e) { return sourcery::interest::stop(e.transfer); }

  sourcery::commands handle(const transfer_requested& e) const {
    return {sourcery::command(withdraw{e.from, e.amount, e.transfer})};
  }
  sourcery::commands handle(const money_withdrawn&) const {
    return {sourcery::command(deposit{to, amount, transfer})};
  }
  sourcery::commands handle(const money_deposited&, const sourcery::event_context& ctx) const {
    if (ctx.aggregate_id() != to)
      return {}; // the refund of a failed transfer
    return {sourcery::command(complete_transfer{transfer})};
  }

  sourcery::commands on_rejected(const sourcery::failed_command& f, const sourcery::event_context&) const {
    // The rejected command names its transfer: the state may not know it
    // yet (a rejection of the first command comes before its event applies).
    if (auto* w = f.as<withdraw>())
      return {sourcery::command(fail_transfer{w->transfer, f.why.reason})};
    if (auto* d = f.as<deposit>())
      return {sourcery::command(deposit{from, d->amount, d->transfer}),
              sourcery::command(fail_transfer{d->transfer, "credit refused: " + f.why.reason})};
    return {}; // complete/fail of a transfer already settled
  }

  void apply(const transfer_requested& e) {
    transfer = e.transfer;
    from = e.from;
    to = e.to;
    amount = e.amount;
  }

private:
  static sourcery::interest part_of(const std::string& t) {
    return t.empty() ? sourcery::interest::none() : sourcery::interest::advance(t);
  }
};

} // namespace bank
