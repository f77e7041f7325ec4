#pragma once

// The bank account of the tests and benchmarks, written with the aggregate API.
// (The bank demo of issue 6 will grow from here.)

#include <cstdint>
#include <string>
#include <variant>

#include <msgpack.hpp>

#include "sourcery/actors/aggregate.hpp"

namespace bank {

// -- commands ------------------------------------------------------------------
struct open_account { std::string account, owner; };
struct deposit { std::string account; int64_t amount = 0; };
struct withdraw { std::string account; int64_t amount = 0; };

// -- events --------------------------------------------------------------------
struct account_opened {
  static constexpr const char* type_name = "bank.account_opened";
  std::string owner;
  MSGPACK_DEFINE_MAP(owner);
};
struct money_deposited {
  static constexpr const char* type_name = "bank.money_deposited";
  int64_t amount = 0;
  MSGPACK_DEFINE_MAP(amount);
};
struct money_withdrawn {
  static constexpr const char* type_name = "bank.money_withdrawn";
  int64_t amount = 0;
  MSGPACK_DEFINE_MAP(amount);
};

// -- the aggregate -------------------------------------------------------------
struct account {
  using event = std::variant<account_opened, money_deposited, money_withdrawn>;
  static constexpr uint32_t snapshot_version = 1;

  bool open = false;
  int64_t balance = 0;
  MSGPACK_DEFINE_MAP(open, balance);

  sourcery::outcome<event> execute(const open_account& c) const {
    if (open)
      return sourcery::reject("already_open");
    return account_opened{c.owner};
  }
  sourcery::outcome<event> execute(const deposit& c) const {
    if (!open)
      return sourcery::reject("not_open");
    if (c.amount <= 0)
      return sourcery::reject("invalid_amount", "deposits are positive");
    return money_deposited{c.amount};
  }
  sourcery::outcome<event> execute(const withdraw& c) const {
    if (!open)
      return sourcery::reject("not_open");
    if (c.amount > balance)
      return sourcery::reject("insufficient_funds", "balance " + std::to_string(balance));
    return money_withdrawn{c.amount};
  }

  void apply(const account_opened&) { open = true; }
  void apply(const money_deposited& e) { balance += e.amount; }
  void apply(const money_withdrawn& e) { balance -= e.amount; }
};

} // namespace bank
