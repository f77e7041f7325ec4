#pragma once

// The bank account of the tests and benchmarks, written with the aggregate API.
// (The bank demo of issue 6 will grow from here.)

#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <variant>

#include <msgpack.hpp>

#include "sourcery/actors/aggregates/aggregate.hpp"
#include "sourcery/persistence/personal.hpp"

namespace bank {

// -- commands ------------------------------------------------------------------
struct open_account { std::string account, owner; SOURCERY_FIELDS(account, owner) };
/// `transfer` names the money transfer a deposit or withdrawal belongs to, if any.
struct deposit { std::string account; int64_t amount = 0; std::string transfer = {}; SOURCERY_FIELDS(account, amount, transfer) };
struct withdraw { std::string account; int64_t amount = 0; std::string transfer = {}; SOURCERY_FIELDS(account, amount, transfer) };

// -- events --------------------------------------------------------------------
/// The owner's name is personal data: sealed with the account's key, gone
/// once the account's subject is forgotten (DELETE /accounts/{id}/personal-data).
struct account_opened {
  sourcery::personal<std::string> owner;
  SOURCERY_EVENT("bank.account_opened", owner)
};
struct money_deposited {
  int64_t amount = 0;
  std::string transfer = {};
  SOURCERY_EVENT("bank.money_deposited", amount, transfer)
};
struct money_withdrawn {
  int64_t amount = 0;
  std::string transfer = {};
  SOURCERY_EVENT("bank.money_withdrawn", amount, transfer)
};

// -- the aggregate -------------------------------------------------------------
struct account {
  using event = std::variant<account_opened, money_deposited, money_withdrawn>;
  static constexpr uint32_t snapshot_version = 3;

  bool open = false;
  sourcery::personal<std::string> owner; ///< forgotten once the account's personal data is
  int64_t balance = 0; ///< never below 0 nor above max_balance: every command is checked first
  static constexpr int64_t max_balance = std::numeric_limits<int64_t>::max();
  /// Transfers already applied here: a process manager delivers commands
  /// at least once, so a transfer's withdrawal or deposit may come twice.
  std::set<std::string> transfers;
  SOURCERY_FIELDS(open, balance, transfers, owner)

  sourcery::outcome<event> execute(const open_account& c) const {
    if (open)
      return sourcery::reject("already_open", "this account is open already");
    return account_opened{c.owner};
  }
  sourcery::outcome<event> execute(const deposit& c) const {
    if (!open)
      return sourcery::reject("not_open", "no account is open under this id: open it first");
    if (c.amount <= 0)
      return sourcery::reject("invalid_amount", "deposits are positive");
    if (!c.transfer.empty() && transfers.count(c.transfer + "+") != 0)
      return sourcery::no_events;
    if (c.amount > max_balance - balance) // checked before the sum: a signed overflow is undefined
      return sourcery::reject("balance_limit", "the balance is " + std::to_string(balance) + "; a deposit of "
                                                 + std::to_string(c.amount) + " would take it past "
                                                 + std::to_string(max_balance));
    return money_deposited{c.amount, c.transfer};
  }
  sourcery::outcome<event> execute(const withdraw& c) const {
    if (!open)
      return sourcery::reject("not_open", "no account is open under this id: open it first");
    if (c.amount <= 0)
      return sourcery::reject("invalid_amount", "withdrawals are positive");
    if (!c.transfer.empty() && transfers.count(c.transfer + "-") != 0)
      return sourcery::no_events;
    if (c.amount > balance)
      return sourcery::reject("insufficient_funds", "the balance is " + std::to_string(balance) + ", less than the "
                                                      + std::to_string(c.amount) + " asked");
    return money_withdrawn{c.amount, c.transfer};
  }

  void apply(const account_opened& e) {
    open = true;
    owner = e.owner;
  }
  void apply(const money_deposited& e) {
    balance += e.amount;
    if (!e.transfer.empty())
      transfers.insert(e.transfer + "+");
  }
  void apply(const money_withdrawn& e) {
    balance -= e.amount;
    if (!e.transfer.empty())
      transfers.insert(e.transfer + "-");
  }
};

// -- money transfers -----------------------------------------------------------
// A transfer is its own aggregate (its request and outcome); the transfer
// process manager (transfer_saga.hpp) moves the money between the accounts.
struct request_transfer { std::string transfer, from, to; int64_t amount = 0; SOURCERY_FIELDS(transfer, from, to, amount) };
struct complete_transfer { std::string transfer; SOURCERY_FIELDS(transfer) };
struct fail_transfer { std::string transfer, reason; SOURCERY_FIELDS(transfer, reason) };

struct transfer_requested {
  std::string transfer, from, to;
  int64_t amount = 0;
  SOURCERY_EVENT("bank.transfer_requested", transfer, from, to, amount)
};
struct transfer_completed {
  std::string transfer;
  SOURCERY_EVENT("bank.transfer_completed", transfer)
};
struct transfer_failed {
  std::string transfer, reason;
  SOURCERY_EVENT("bank.transfer_failed", transfer, reason)
};

struct transfer {
  using event = std::variant<transfer_requested, transfer_completed, transfer_failed>;
  enum class stage : uint8_t { none, requested, completed, failed };
  stage at = stage::none;

  sourcery::outcome<event> execute(const request_transfer& c) const {
    if (at != stage::none)
      return sourcery::reject("already_requested", "a transfer with this id was requested already");
    if (c.amount <= 0 || c.from == c.to)
      return sourcery::reject("invalid_transfer", c.amount <= 0 ? "a transfer moves a positive amount"
                                                                : "a transfer goes between two accounts");
    return transfer_requested{c.transfer, c.from, c.to, c.amount};
  }
  sourcery::outcome<event> execute(const complete_transfer& c) const {
    if (at == stage::completed)
      return sourcery::no_events; // a redelivered command: already done
    if (at != stage::requested)
      return sourcery::reject("not_pending", "this transfer is not waiting to complete");
    return transfer_completed{c.transfer};
  }
  sourcery::outcome<event> execute(const fail_transfer& c) const {
    if (at == stage::failed)
      return sourcery::no_events;
    if (at != stage::requested)
      return sourcery::reject("not_pending", "this transfer is not waiting to complete");
    return transfer_failed{c.transfer, c.reason};
  }

  void apply(const transfer_requested&) { at = stage::requested; }
  void apply(const transfer_completed&) { at = stage::completed; }
  void apply(const transfer_failed&) { at = stage::failed; }
};

} // namespace bank
