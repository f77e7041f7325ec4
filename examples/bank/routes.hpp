#pragma once

// How bank commands reach their accounts: the identity is the command's
// `account` field, the stream id "account-<id>".

#include "bank.hpp"
#include "sourcery/runtime/router.hpp"

namespace bank {

inline sourcery::router routes() {
  sourcery::router r;
  r.route<account, open_account>(&open_account::account, "account-");
  r.route<account, deposit>(&deposit::account, "account-");
  r.route<account, withdraw>(&withdraw::account, "account-");
  r.route<transfer, request_transfer>(&request_transfer::transfer, "transfer-");
  r.route<transfer, complete_transfer>(&complete_transfer::transfer, "transfer-");
  r.route<transfer, fail_transfer>(&fail_transfer::transfer, "transfer-");
  return r;
}

} // namespace bank
