#pragma once

// How bank commands reach their aggregates: accounts by their `account`
// field (stream "account-<id>"), transfers by their `transfer` field.

#include "bank.hpp"
#include "sourcery/runtime/commands/router.hpp"

namespace bank {

/// `accounts`: how accounts run (the demo snapshots them every 4 events).
inline sourcery::router routes(sourcery::aggregate_settings accounts = {}) {
  sourcery::router r;
  r.aggregate<account>([](const auto& c) { return c.account; }, "account-", accounts)
    .dispatch<open_account, deposit, withdraw>();
  r.aggregate<transfer>([](const auto& c) { return c.transfer; }, "transfer-")
    .dispatch<request_transfer, complete_transfer, fail_transfer>();
  return r;
}

} // namespace bank
