#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "sourcery/actors/aggregates/aggregate.hpp"
#include "sourcery/actors/aggregates/command_envelope.hpp"

namespace sourcery {

/// How an aggregate type runs, declared once with its identity:
///
///     sourcery::aggregate_settings accounts;
///     accounts.snapshot_every = 100;
///     r.aggregate<account>([](const auto& c) { return c.account; }, "account-", accounts)
///      .dispatch<open_account, deposit, withdraw>();
struct aggregate_settings {
  /// How long an idle aggregate's actor stays alive when neither its last
  /// event nor its last command chose (`after_event`, `after_command`).
  sourcery::lifespan lifespan = sourcery::lifespan::timeout(std::chrono::minutes{5});
  /// The lifespan after a rejected or failed command (Commanded's
  /// `after_error`); unset: as after any other command.
  std::optional<sourcery::lifespan> after_error;
  /// Save a snapshot whenever the version crosses a multiple of this (0:
  /// never). The aggregate needs MSGPACK_DEFINE_MAP and `snapshot_version`.
  uint32_t snapshot_every = 0;
  /// On a conflict with another writer (wrong expected version): reload and
  /// decide again this many times before answering the conflict.
  int max_retries = 3;
  /// A dispatch's timeout when its options set none.
  std::chrono::milliseconds timeout{5000};
  /// A dispatch's consistency when its options set none.
  consistency consistency_level = consistency::eventual;
};

} // namespace sourcery
